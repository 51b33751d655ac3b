//! DWARF lookups through `addr2line`: for an ELF virtual address the function, file and line,
//! and the chain of functions inlined there, innermost first.
//!
//! Only the sections line and inline lookups need are read (`.debug_info`, `.debug_line`,
//! `.debug_abbrev`, `.debug_str`, ranges, …; not location lists or macros), decompressed when
//! `SHF_COMPRESSED`/`.zdebug`, and refused above a size limit before anything is allocated.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use object::{Object, ObjectSection};

use crate::demangle::{Demangle, demangle};

type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// Distinct names and paths kept interned per file; past this, each lookup allocates its own.
const MAX_INTERNED: usize = 1 << 16;
/// Inline levels reported for one address (deeper chains are cut at the outermost end).
const MAX_DEPTH: usize = 64;
/// Parsed units, lines and functions cost roughly this many times the section bytes in memory
/// (measured on libc's and rustc's debug info); used to weigh cache entries.
pub(crate) const PARSED_OVERHEAD: u64 = 2;

/// Errors loading or reading a file's DWARF.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not an object file `object` can read.
    #[error("{path}: not a readable object file: {reason}")]
    NotObject {
        /// The file.
        path: PathBuf,
        /// What object reported.
        reason: String,
    },
    /// The file has no `.debug_info` and no `.debug_line`.
    #[error("{path}: no DWARF debug info")]
    NoDebugInfo {
        /// The file.
        path: PathBuf,
    },
    /// The DWARF sections (uncompressed) are bigger than the allowed size.
    #[error("{path}: DWARF sections need {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes the sections need uncompressed.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A section could not be decompressed, or the DWARF is malformed.
    #[error("{path}: corrupt DWARF ({section}): {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The section or structure at fault.
        section: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// One level of the source location of an address: the function, and the file and line being
/// executed in it (for an inlined function's callers, the line of the call).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceFrame {
    /// Function name (demangled per the configured mode).
    pub function: Arc<str>,
    /// Source file path as the compiler recorded it (joined with the compilation directory),
    /// `None` when unknown.
    pub file: Option<Arc<str>>,
    /// Line number, 0 when unknown.
    pub line: u32,
    /// Line where the function is declared (`DW_AT_decl_line`), 0 when unknown.
    pub start_line: u32,
}

/// The DWARF of one ELF file, ready for lookups. Loading reads the needed sections; units,
/// line programs and functions are parsed on first use. Shareable between threads (lookups
/// take a lock).
///
/// ```no_run
/// use pyro_symbolize::{DebugInfo, Demangle};
///
/// let info = DebugInfo::load("/usr/lib/debug/.build-id/ab/cdef.debug", Demangle::Full, 1 << 30)?;
/// for frame in info.lookup(0x29d90)? {
///     println!("{} {}:{}", frame.function, frame.file.as_deref().unwrap_or("??"), frame.line);
/// }
/// # Ok::<(), pyro_symbolize::DwarfError>(())
/// ```
pub struct DebugInfo {
    path: PathBuf,
    bytes: u64,
    demangle: Demangle,
    inner: Mutex<Inner>,
}

struct Inner {
    ctx: addr2line::Context<Reader>,
    names: HashMap<Box<str>, Arc<str>>,
    files: HashMap<Box<str>, Arc<str>>,
    /// `DW_AT_decl_line` by (interned name, unit-relative DIE offset): reading it means
    /// finding the unit and parsing the DIE, three quarters of a warm lookup otherwise.
    decl_lines: HashMap<(usize, usize), u32>,
}

impl std::fmt::Debug for DebugInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugInfo")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .field("demangle", &self.demangle)
            .finish_non_exhaustive()
    }
}

/// The sections line and inline lookups read; the others stay empty.
fn needed(id: gimli::SectionId) -> bool {
    use gimli::SectionId::*;
    matches!(
        id,
        DebugAbbrev
            | DebugAddr
            | DebugAranges
            | DebugInfo
            | DebugLine
            | DebugLineStr
            | DebugRanges
            | DebugRngLists
            | DebugStr
            | DebugStrOffsets
    )
}

impl DebugInfo {
    /// Loads the DWARF of the ELF file at `path`, refusing sections that need more than
    /// `max_bytes` uncompressed.
    pub fn load(
        path: impl AsRef<Path>,
        demangle: Demangle,
        max_bytes: u64,
    ) -> Result<Self, DwarfError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| DwarfError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file(&file, path, demangle, max_bytes)
    }

    /// Like [`load`](Self::load) from an open file; `path` is for messages.
    pub fn from_file(
        file: &File,
        path: &Path,
        demangle: Demangle,
        max_bytes: u64,
    ) -> Result<Self, DwarfError> {
        use std::os::unix::fs::FileExt;
        let cache = object::read::ReadCache::new(file);
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        Self::parse(
            &cache,
            file_len,
            path,
            demangle,
            max_bytes,
            |offset, buf| file.read_exact_at(buf, offset),
        )
    }

    /// Like [`load`](Self::load) for an ELF image in memory; `name` is for messages.
    pub fn from_bytes(
        bytes: &[u8],
        name: &Path,
        demangle: Demangle,
        max_bytes: u64,
    ) -> Result<Self, DwarfError> {
        Self::parse(
            bytes,
            bytes.len() as u64,
            name,
            demangle,
            max_bytes,
            |offset, buf| {
                let start = usize::try_from(offset).map_err(std::io::Error::other)?;
                let src = bytes
                    .get(start..)
                    .and_then(|t| t.get(..buf.len()))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            },
        )
    }

    /// Reads the headers through `headers`, section bytes through `read`.
    fn parse<'data, R: object::ReadRef<'data>>(
        headers: R,
        file_len: u64,
        path: &Path,
        demangle: Demangle,
        max_bytes: u64,
        read: impl Fn(u64, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<Self, DwarfError> {
        let obj = object::File::parse(headers).map_err(|e| DwarfError::NotObject {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let endian = if obj.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let corrupt = |section: &'static str, reason: String| DwarfError::Corrupt {
            path: path.to_owned(),
            section,
            reason,
        };
        // Sizes first: refuse before reading anything big.
        let mut ranges = Vec::new();
        let mut total = 0u64;
        for id in ALL_SECTIONS.iter().copied().filter(|&id| needed(id)) {
            let Some(section) = obj.section_by_name(id.name()) else {
                continue;
            };
            let range = section
                .compressed_file_range()
                .map_err(|e| corrupt(id.name(), e.to_string()))?;
            total = total.saturating_add(range.uncompressed_size);
            ranges.push((id, range));
        }
        if !ranges.iter().any(|(id, r)| {
            matches!(
                id,
                gimli::SectionId::DebugInfo | gimli::SectionId::DebugLine
            ) && r.uncompressed_size > 0
        }) {
            return Err(DwarfError::NoDebugInfo {
                path: path.to_owned(),
            });
        }
        if total > max_bytes {
            return Err(DwarfError::TooLarge {
                path: path.to_owned(),
                size: total,
                limit: max_bytes,
            });
        }
        let mut data: HashMap<gimli::SectionId, Arc<[u8]>> = HashMap::new();
        for (id, range) in ranges {
            if range.offset.saturating_add(range.compressed_size) > file_len {
                return Err(corrupt(
                    id.name(),
                    "section extends past the end of the file".into(),
                ));
            }
            // compressed_size <= file_len: the allocation is bounded by the file itself.
            let mut raw = vec![0u8; range.compressed_size as usize];
            read(range.offset, &mut raw).map_err(|source| DwarfError::Io {
                path: path.to_owned(),
                source,
            })?;
            let bytes: Arc<[u8]> = if range.format == object::CompressionFormat::None {
                raw.into()
            } else {
                let compressed = object::read::CompressedData {
                    format: range.format,
                    data: &raw,
                    uncompressed_size: range.uncompressed_size,
                };
                let out = compressed
                    .decompress()
                    .map_err(|e| corrupt(id.name(), e.to_string()))?;
                Arc::from(out.as_ref())
            };
            data.insert(id, bytes);
        }
        drop(obj);
        let empty: Arc<[u8]> = Arc::from(&[][..]);
        let dwarf = gimli::Dwarf::load(|id| -> Result<Reader, gimli::Error> {
            let bytes = data.get(&id).cloned().unwrap_or_else(|| empty.clone());
            Ok(Reader::new(bytes, endian))
        })
        .map_err(|e| corrupt("sections", e.to_string()))?;
        let ctx = addr2line::Context::from_dwarf(dwarf)
            .map_err(|e| corrupt(".debug_info", e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            bytes: total,
            demangle,
            inner: Mutex::new(Inner {
                ctx,
                names: HashMap::new(),
                files: HashMap::new(),
                decl_lines: HashMap::new(),
            }),
        })
    }

    /// Bytes of DWARF sections held (uncompressed).
    pub fn section_bytes(&self) -> u64 {
        self.bytes
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`lookup`](Self::lookup), with frames the DWARF names no function for named `symbol`
    /// (the symbol-table name at `vaddr`), as binutils' `addr2line -f` does. Errors give no
    /// frames.
    pub fn lookup_or_symbol(&self, vaddr: u64, symbol: Option<&Arc<str>>) -> Vec<SourceFrame> {
        let mut frames = match self.lookup(vaddr) {
            Ok(f) => f,
            Err(error) => {
                tracing::debug!(%error, vaddr, "DWARF lookup failed");
                return Vec::new();
            }
        };
        if let Some(symbol) = symbol {
            for f in frames.iter_mut().filter(|f| f.function.is_empty()) {
                f.function = symbol.clone();
            }
        }
        frames
    }

    /// The source frames at ELF virtual address `vaddr`, innermost inlined function first and
    /// the function holding the code last. Empty when the DWARF does not cover the address; a
    /// frame's function is empty (`""`) when the DWARF names none there (only a line).
    pub fn lookup(&self, vaddr: u64) -> Result<Vec<SourceFrame>, DwarfError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner {
            ctx,
            names,
            files,
            decl_lines,
        } = &mut *inner;
        let corrupt = |e: gimli::Error| DwarfError::Corrupt {
            path: self.path.clone(),
            section: ".debug_info",
            reason: e.to_string(),
        };
        let mut iter = ctx.find_frames(vaddr).skip_all_loads().map_err(corrupt)?;
        let mut out = Vec::new();
        while let Some(frame) = iter.next().map_err(corrupt)? {
            if out.len() == MAX_DEPTH {
                break;
            }
            let function = match &frame.function {
                Some(f) => {
                    let raw = f.raw_name().map_err(corrupt)?;
                    intern(names, &raw, |s| demangle(s, self.demangle).into())
                }
                None => Arc::from(""),
            };
            let (file, line) = match &frame.location {
                Some(l) => (
                    l.file.map(|f| intern(files, f, |s| Arc::from(s))),
                    l.line.unwrap_or(0),
                ),
                None => (None, 0),
            };
            let start_line = match frame.dw_die_offset {
                Some(off) => {
                    let key = (Arc::as_ptr(&function).cast::<u8>() as usize, off.0);
                    match decl_lines.get(&key) {
                        Some(&l) => l,
                        None => {
                            let l = decl_line(ctx, vaddr, off).unwrap_or(0);
                            // Only interned names have stable addresses to key on.
                            if decl_lines.len() < MAX_INTERNED && names.len() < MAX_INTERNED {
                                decl_lines.insert(key, l);
                            }
                            l
                        }
                    }
                }
                None => 0,
            };
            out.push(SourceFrame {
                function,
                file,
                line,
                start_line,
            });
        }
        Ok(out)
    }
}

/// `DW_AT_decl_line` of the DIE at `offset` in the unit holding `vaddr`, following abstract
/// origins and specifications (inlined and out-of-line definitions carry it on the
/// declaration).
fn decl_line(
    ctx: &addr2line::Context<Reader>,
    vaddr: u64,
    offset: gimli::UnitOffset<usize>,
) -> Option<u32> {
    let unit = ctx.find_dwarf_and_unit(vaddr).skip_all_loads()?;
    let mut off = offset;
    for _ in 0..4 {
        let entry = unit.entry(off).ok()?;
        if let Some(v) = entry.attr_value(gimli::DW_AT_decl_line) {
            return v.udata_value().and_then(|l| u32::try_from(l).ok());
        }
        match entry
            .attr_value(gimli::DW_AT_abstract_origin)
            .or_else(|| entry.attr_value(gimli::DW_AT_specification))
        {
            Some(gimli::AttributeValue::UnitRef(o)) => off = o,
            _ => return None,
        }
    }
    None
}

/// Where a file's DWARF is read from: the mapped binary itself or its separate debug file.
#[derive(Debug, Clone)]
pub(crate) struct DebugSource {
    /// `(dev, inode)` of `file`: the cache key, so processes mapping the same file share it.
    pub(crate) key: (u64, u64),
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
}

impl DebugSource {
    pub(crate) fn new(file: &File, path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let md = file.metadata().ok()?;
        Some(Self {
            key: (md.dev(), md.ino()),
            path: path.to_owned(),
            file: Arc::new(file.try_clone().ok()?),
        })
    }
}

/// Loaded DWARF of all files, shared by all processes, weighed by bytes against a limit
/// (least recently used dropped first). Files that failed to load are remembered (weight
/// 1 KiB) so they are not retried on every sample.
pub(crate) struct DwarfCache {
    cache: moka::sync::Cache<(u64, u64), Option<Arc<DebugInfo>>>,
    limit: u64,
    errors: AtomicU64,
}

impl DwarfCache {
    pub(crate) fn new(limit: u64) -> Self {
        let kib = |bytes: u64| u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity((limit / 1024).max(1))
                .weigher(move |_, v: &Option<Arc<DebugInfo>>| {
                    v.as_ref()
                        .map_or(1, |d| kib(d.bytes.saturating_mul(PARSED_OVERHEAD)))
                })
                .build(),
            limit,
            errors: AtomicU64::new(0),
        }
    }

    /// The DWARF of `source`, loaded on first use.
    pub(crate) fn get(&self, source: &DebugSource, demangle: Demangle) -> Option<Arc<DebugInfo>> {
        self.cache.get_with(source.key, || {
            let max = self.limit / PARSED_OVERHEAD;
            match DebugInfo::from_file(&source.file, &source.path, demangle, max) {
                Ok(d) => Some(Arc::new(d)),
                Err(error) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "no line info from this file");
                    None
                }
            }
        })
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn weighted_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size().saturating_mul(1024)
    }
}

fn intern(
    map: &mut HashMap<Box<str>, Arc<str>>,
    key: &str,
    make: impl FnOnce(&str) -> Arc<str>,
) -> Arc<str> {
    if let Some(v) = map.get(key) {
        return v.clone();
    }
    let v = make(key);
    if map.len() < MAX_INTERNED {
        map.insert(key.into(), v.clone());
    }
    v
}

const ALL_SECTIONS: [gimli::SectionId; 10] = [
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugAranges,
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_test_binary_has_lines_for_this_function() {
        let exe = std::env::current_exe().unwrap();
        // Test binaries are built with debug info in the dev profile.
        let info = DebugInfo::load(&exe, Demangle::Full, u64::MAX).unwrap();
        let data = std::fs::read(&exe).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        let mut found = false;
        for sym in object::Object::symbols(&obj) {
            let name = object::ObjectSymbol::name(&sym).unwrap_or("");
            if !demangle(name, Demangle::Full)
                .ends_with("::own_test_binary_has_lines_for_this_function")
            {
                continue;
            }
            let frames = info
                .lookup(object::ObjectSymbol::address(&sym) + 4)
                .unwrap();
            let last = frames.last().unwrap();
            assert!(
                last.function
                    .ends_with("own_test_binary_has_lines_for_this_function")
            );
            assert!(
                last.file.as_deref().unwrap().ends_with("src/dwarf.rs"),
                "{last:?}"
            );
            assert!(last.line > 0 && last.start_line > 0, "{last:?}");
            found = true;
        }
        assert!(found);
    }

    #[test]
    fn limit_is_checked_before_reading() {
        let exe = std::env::current_exe().unwrap();
        let err = DebugInfo::load(&exe, Demangle::None, 1024).unwrap_err();
        assert!(
            matches!(err, DwarfError::TooLarge { limit: 1024, .. }),
            "{err}"
        );
    }
}
