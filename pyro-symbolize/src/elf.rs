//! Function symbols of one ELF file: `.symtab` and `.dynsym`, as a sorted address array with
//! binary search; names read from the file on first lookup and stored demangled (per
//! [`Demangle`]) once per symbol.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, Sym};
use object::read::{ReadCache, ReadRef};
use object::{Endianness, FileKind};

use crate::demangle::{Demangle, demangle};

/// Symbol tables larger than this (bytes of `.symtab` + string table) are refused.
const MAX_TABLE_BYTES: u64 = 1 << 30;
/// How many preceding symbols a lookup inspects when the nearest one does not cover the address
/// (a function nested in a larger sized symbol).
const NESTED_SCAN: usize = 8;

/// Errors loading an ELF file's symbols.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file could not be opened.
    #[error("open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a (supported) ELF file.
    #[error("{path}: not an ELF file")]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The MiniDebugInfo (`.gnu_debugdata`, an xz-compressed ELF) could not be read.
    #[error("{path}: bad .gnu_debugdata: {reason}")]
    MiniDebugInfo {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A part of the file is bigger than the cap set for it.
    #[error("{path}: {what} is {size} bytes, over the cap of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What was too big (`.gnu_debugdata`, `decompressed .gnu_debugdata`).
        what: &'static str,
        /// Its size (for a decompression, how far it got before it was stopped).
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// The ELF structures are malformed or truncated.
    #[error("{path}: malformed ELF: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What object reported.
        reason: String,
    },
}

/// A `PT_LOAD` segment: maps file offsets to ELF virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoadSegment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
    executable: bool,
}

/// Identity of an ELF file's contents, from its notes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum BuildId {
    /// `NT_GNU_BUILD_ID`.
    Gnu(Arc<[u8]>),
    /// Go's `.note.go.buildid`.
    Go(Arc<[u8]>),
}

/// Positioned reads from where an ELF image lives: a file, or memory (the vDSO).
pub(crate) trait ReadAt: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;

    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// An ELF image in memory.
struct Memory(Arc<[u8]>);

impl ReadAt for Memory {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let tail = usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.get(o..))
            .unwrap_or(&[]);
        let n = tail.len().min(buf.len());
        buf[..n].copy_from_slice(&tail[..n]);
        Ok(n)
    }
}

/// Sequential reads for `object`'s [`ReadCache`].
trait ReadSeek: std::io::Read + std::io::Seek + Send {}
impl<T: std::io::Read + std::io::Seek + Send> ReadSeek for T {}
type Cache = ReadCache<Box<dyn ReadSeek>>;

/// Headers of an ELF file read so far: enough to get its build id before deciding whether its
/// symbols need loading at all.
pub(crate) struct ElfHeaders {
    path: PathBuf,
    /// Kept by the loaded table to read names on demand; headers and symbols go through `cache`.
    file: Arc<dyn ReadAt>,
    cache: Cache,
    build_id: Option<BuildId>,
    has_symtab: bool,
    has_debug_info: bool,
    debuglink: Option<DebugLink>,
    /// File offset and size of `.gnu_debugdata` (MiniDebugInfo).
    gnu_debugdata: Option<(u64, u64)>,
}

/// Largest `.gnu_debugdata` read (compressed); Fedora's are tens to hundreds of KiB.
const MAX_DEBUGDATA: u64 = 16 << 20;

/// A `.gnu_debuglink`: the separate debug file's name and the CRC32 of its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DebugLink {
    pub(crate) name: String,
    pub(crate) crc: u32,
}

impl std::fmt::Debug for ElfHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfHeaders")
            .field("path", &self.path)
            .field("build_id", &self.build_id)
            .finish_non_exhaustive()
    }
}

impl ElfHeaders {
    /// Reads the ELF header and notes of `file`; `path` is for messages only.
    pub(crate) fn read(file: File, path: &Path) -> Result<Self, ElfError> {
        let cache: Cache = ReadCache::new(Box::new(file.try_clone().map_err(|source| {
            ElfError::Open {
                path: path.to_owned(),
                source,
            }
        })?));
        Self::parse(Arc::new(file), cache, path)
    }

    /// Like [`read`](Self::read) for an image in memory; `name` is for messages only.
    pub(crate) fn from_memory(bytes: Arc<[u8]>, name: &Path) -> Result<Self, ElfError> {
        let cache: Cache = ReadCache::new(Box::new(std::io::Cursor::new(bytes.clone())));
        Self::parse(Arc::new(Memory(bytes)), cache, name)
    }

    fn parse(file: Arc<dyn ReadAt>, cache: Cache, path: &Path) -> Result<Self, ElfError> {
        let (build_id, has_symtab, has_debug_info, debuglink, gnu_debugdata) =
            match FileKind::parse(&cache) {
                Ok(FileKind::Elf64) => build_id::<elf::FileHeader64<Endianness>>(&cache, path)?,
                Ok(FileKind::Elf32) => build_id::<elf::FileHeader32<Endianness>>(&cache, path)?,
                _ => {
                    return Err(ElfError::NotElf {
                        path: path.to_owned(),
                    });
                }
            };
        Ok(Self {
            path: path.to_owned(),
            file,
            cache,
            build_id,
            has_symtab,
            has_debug_info,
            debuglink,
            gnu_debugdata,
        })
    }

    /// The symbols embedded as MiniDebugInfo (`.gnu_debugdata`: an xz-compressed ELF with a
    /// `.symtab`), when the file has that section. The section is refused above 16 MiB or
    /// `limit`, whichever is smaller, and its decompression stopped at `limit` bytes.
    pub(crate) fn mini_debuginfo(&self, limit: u64) -> Result<Option<ElfHeaders>, ElfError> {
        let Some((offset, size)) = self.gnu_debugdata else {
            return Ok(None);
        };
        let bad = |reason: String| ElfError::MiniDebugInfo {
            path: self.path.clone(),
            reason,
        };
        let too_large = |what, size, limit| ElfError::TooLarge {
            path: self.path.clone(),
            what,
            size,
            limit,
        };
        let compressed_limit = MAX_DEBUGDATA.min(limit);
        if size > compressed_limit {
            return Err(too_large(".gnu_debugdata", size, compressed_limit));
        }
        let mut compressed = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut compressed, offset)
            .map_err(|e| bad(e.to_string()))?;
        let mut out = Capped {
            bytes: Vec::new(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            hit: false,
        };
        if let Err(e) = lzma_rs::xz_decompress(&mut &compressed[..], &mut out) {
            if out.hit {
                return Err(too_large(
                    "decompressed .gnu_debugdata",
                    out.bytes.len() as u64,
                    limit,
                ));
            }
            return Err(bad(format!("xz: {e}")));
        }
        let mut name = self.path.clone().into_os_string();
        name.push(":.gnu_debugdata");
        ElfHeaders::from_memory(out.bytes.into(), Path::new(&name)).map(Some)
    }

    /// The file's `.gnu_debuglink`, if it has a well-formed one.
    pub(crate) fn debuglink(&self) -> Option<&DebugLink> {
        self.debuglink.as_ref()
    }

    /// Whether the file has a `.debug_info` (or compressed `.zdebug_info`) section with data.
    pub(crate) fn has_debug_info(&self) -> bool {
        self.has_debug_info
    }

    pub(crate) fn build_id(&self) -> Option<&BuildId> {
        self.build_id.as_ref()
    }

    /// Whether the file has a `.symtab` (else only exported `.dynsym` symbols: look for a
    /// separate debug file).
    pub(crate) fn has_symtab(&self) -> bool {
        self.has_symtab
    }

    /// Reads the symbol tables.
    pub(crate) fn load(self, demangle: Demangle) -> Result<ElfSymbols, ElfError> {
        self.load_inline_up_to(demangle, INLINE_STRTAB)
    }

    /// [`load`](Self::load), keeping string tables of up to `inline` bytes in memory.
    fn load_inline_up_to(self, demangle: Demangle, inline: u64) -> Result<ElfSymbols, ElfError> {
        let mut table = match FileKind::parse(&self.cache) {
            Ok(FileKind::Elf64) => load::<elf::FileHeader64<Endianness>>(
                &self.cache,
                &self.file,
                &self.path,
                demangle,
                inline,
            )?,
            Ok(FileKind::Elf32) => load::<elf::FileHeader32<Endianness>>(
                &self.cache,
                &self.file,
                &self.path,
                demangle,
                inline,
            )?,
            _ => {
                return Err(ElfError::NotElf {
                    path: self.path.clone(),
                });
            }
        };
        table.build_id = self.build_id;
        Ok(table)
    }
}

fn malformed(path: &Path, e: object::read::Error) -> ElfError {
    ElfError::Malformed {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// What [`build_id`] finds: build id, has `.symtab`, has `.debug_info`, the debug link, and
/// where `.gnu_debugdata` is.
type Headers = (
    Option<BuildId>,
    bool,
    bool,
    Option<DebugLink>,
    Option<(u64, u64)>,
);

/// A `Write` that refuses to grow past `limit` bytes (and says it did, in `hit`).
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    hit: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.hit = true;
            return Err(std::io::Error::other(format!(
                "decompresses to more than {} bytes",
                self.limit
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn build_id<Elf: FileHeader<Endian = Endianness>>(
    data: &Cache,
    path: &Path,
) -> Result<Headers, ElfError> {
    let header = Elf::parse(data).map_err(|e| malformed(path, e))?;
    let endian = header.endian().map_err(|e| malformed(path, e))?;
    let sections = header
        .sections(endian, data)
        .map_err(|e| malformed(path, e))?;
    let has_symtab = sections
        .iter()
        .any(|s| s.sh_type(endian) == elf::SHT_SYMTAB && s.sh_size(endian).into() > 0);
    let has_debug_info = sections.iter().any(|s| {
        s.sh_type(endian) == elf::SHT_PROGBITS
            && s.sh_size(endian).into() > 0
            && sections
                .section_name(endian, s)
                .is_ok_and(|n| n == b".debug_info" || n == b".zdebug_info")
    });
    let debuglink = sections
        .iter()
        .find(|s| {
            sections
                .section_name(endian, s)
                .is_ok_and(|n| n == b".gnu_debuglink")
        })
        .and_then(|s| s.data(endian, data).ok())
        .and_then(|d| parse_debuglink(d, matches!(endian, Endianness::Little)));
    let gnu_debugdata = sections
        .iter()
        .find(|s| {
            s.sh_type(endian) == elf::SHT_PROGBITS
                && sections
                    .section_name(endian, s)
                    .is_ok_and(|n| n == b".gnu_debugdata")
        })
        .and_then(|s| s.file_range(endian));
    let mut go = None;
    let mut gnu = None;
    for section in sections.iter() {
        if section.sh_type(endian) != elf::SHT_NOTE {
            continue;
        }
        // A broken note section only costs us the build id, not the symbols.
        let Ok(Some(mut notes)) = section.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == elf::ELF_NOTE_GNU
                && note.n_type(endian) == elf::NT_GNU_BUILD_ID
                && gnu.is_none()
            {
                gnu = Some(BuildId::Gnu(note.desc().into()));
            }
            if note.name() == b"Go" && note.n_type(endian) == 4 {
                go = Some(BuildId::Go(note.desc().into()));
            }
        }
    }
    Ok((
        gnu.or(go),
        has_symtab,
        has_debug_info,
        debuglink,
        gnu_debugdata,
    ))
}

/// `.gnu_debuglink` contents: a NUL-terminated file name, padding to 4 bytes, a CRC32.
fn parse_debuglink(data: &[u8], little: bool) -> Option<DebugLink> {
    let nul = data.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&data[..nul]).ok()?;
    // A bare file name: anything with a separator could escape the search directories.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let at = (nul + 1).next_multiple_of(4);
    let crc: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
    Some(DebugLink {
        name: name.to_owned(),
        crc: if little {
            u32::from_le_bytes(crc)
        } else {
            u32::from_be_bytes(crc)
        },
    })
}

/// Where a string table is in the file. Symbol name offsets are `base + st_name`, so one `u32`
/// names a string in any of the tables.
#[derive(Debug)]
struct StrTab {
    base: u32,
    offset: u64,
    size: u64,
    /// The whole table when it is small enough to keep ([`INLINE_STRTAB`]).
    data: Option<Box<[u8]>>,
}

/// String tables up to this size are read whole at load (one read instead of one per name;
/// `libc.so.6`'s is 32 KiB); bigger ones (`librustc_driver`'s is 20 MB) are read name by name
/// on first lookup, so memory follows the symbols actually seen.
const INLINE_STRTAB: u64 = 1 << 20;

/// Longest name read (C++ template instantiations can be long; nothing real is this long).
const MAX_NAME: usize = 64 * 1024;

/// One symbol of the sorted table (its address is in the parallel `addrs` array).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Size in bytes; 0 when the symbol has none (then it matches its exact address only).
    size: u32,
    /// Offset of the NUL-terminated name in the string tables (see [`StrTab`]).
    name: u32,
}

/// Function symbols of one ELF file, sorted for lookup by ELF virtual address.
///
/// Loading reads the symbol tables (not the string tables) and sorts function symbols by
/// address. The display name of a symbol (demangled per the table's [`Demangle`] mode) is read
/// from the file on its first lookup and then stored, so repeated lookups cost a binary search
/// and a reference-count increment, and memory grows with the symbols actually seen.
///
/// ```no_run
/// use pyro_symbolize::{Demangle, ElfSymbols};
///
/// let libc = ElfSymbols::load("/lib/x86_64-linux-gnu/libc.so.6", Demangle::None)?;
/// if let Some(name) = libc.lookup(0x29d90) {
///     println!("{name}");
/// }
/// # Ok::<(), pyro_symbolize::ElfError>(())
/// ```
pub struct ElfSymbols {
    addrs: Box<[u64]>,
    entries: Box<[Entry]>,
    display: Box<[OnceLock<Arc<str>>]>,
    /// Names are read from the file when a symbol is first looked up (then kept in `display`):
    /// big binaries' string tables (20 MB for `librustc_driver`) are never held in memory.
    file: Arc<dyn ReadAt>,
    strtabs: Box<[StrTab]>,
    segments: Box<[LoadSegment]>,
    build_id: Option<BuildId>,
    demangle: Demangle,
    /// Where this file's DWARF is (the file itself or its debug file), when it has any.
    debug: Option<crate::dwarf::DebugSource>,
}

impl std::fmt::Debug for ElfSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfSymbols")
            .field("symbols", &self.addrs.len())
            .field("strtabs", &self.strtabs)
            .field("segments", &self.segments)
            .field("build_id", &self.build_id)
            .field("demangle", &self.demangle)
            .finish_non_exhaustive()
    }
}

impl ElfSymbols {
    /// Loads the function symbols (`STT_FUNC`, `STT_GNU_IFUNC`) of `.symtab` and `.dynsym` of the
    /// ELF file at `path`.
    pub fn load(path: impl AsRef<Path>, demangle: Demangle) -> Result<Self, ElfError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| ElfError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file(file, path, demangle)
    }

    /// Like [`load`](Self::load) from an already open file; `path` is used in errors only.
    pub fn from_file(file: File, path: &Path, demangle: Demangle) -> Result<Self, ElfError> {
        ElfHeaders::read(file, path)?.load(demangle)
    }

    /// Like [`load`](Self::load) for an ELF image in memory (such as a process's vDSO, read
    /// from `/proc/PID/mem`); `name` is used in errors only.
    pub fn from_bytes(
        bytes: impl Into<Arc<[u8]>>,
        name: &Path,
        demangle: Demangle,
    ) -> Result<Self, ElfError> {
        ElfHeaders::from_memory(bytes.into(), name)?.load(demangle)
    }

    /// The display name of the function containing ELF virtual address `vaddr`.
    ///
    /// `None` when no function symbol covers it, or when its name can no longer be read (the
    /// file was truncated since loading).
    pub fn lookup(&self, vaddr: u64) -> Option<&Arc<str>> {
        let i = self.find(vaddr)?;
        self.display_name(i)
    }

    /// [`lookup`](Self::lookup) for many addresses at once: one result per address, same order.
    ///
    /// Names not looked up before are read from big string tables in a few sequential reads
    /// instead of one read per name, which makes a first pass over many addresses cheaper.
    pub fn lookup_many(&self, vaddrs: &[u64]) -> Vec<Option<&Arc<str>>> {
        let found: Vec<Option<usize>> = vaddrs.iter().map(|&a| self.find(a)).collect();
        let mut missing: Vec<(u32, usize)> = found
            .iter()
            .flatten()
            .filter(|&&i| self.display[i].get().is_none())
            .map(|&i| (self.entries[i].name, i))
            .collect();
        if missing.len() > 1 {
            missing.sort_unstable();
            missing.dedup();
            self.prefetch_names(&missing);
        }
        found
            .into_iter()
            .map(|i| i.and_then(|i| self.display_name(i)))
            .collect()
    }

    /// Reads the names of symbols `missing` (`(name offset, index)`, sorted) from lazily read
    /// string tables through one reused window buffer, storing their display names.
    fn prefetch_names(&self, missing: &[(u32, usize)]) {
        /// Largest read; names are gathered into runs that fit.
        const WINDOW: u64 = 64 * 1024;
        /// Bytes read past a run's last name start, enough for most names.
        const TAIL: u64 = 1024;
        let mut buf: Vec<u8> = Vec::new();
        let mut k = 0;
        while k < missing.len() {
            let (first, _) = missing[k];
            let Some(tab) = self.strtabs.iter().rev().find(|t| t.base <= first) else {
                k += 1;
                continue;
            };
            if tab.data.is_some() {
                // Names of in-memory tables cost nothing to read one by one.
                k += 1;
                continue;
            }
            let start = u64::from(first - tab.base);
            // Extend the run while the next name starts within the window.
            let mut end = k + 1;
            while end < missing.len() {
                let off = u64::from(missing[end].0);
                let base = u64::from(tab.base);
                if off >= base + tab.size || off - base >= start + WINDOW - TAIL {
                    break;
                }
                end += 1;
            }
            let last = u64::from(missing[end - 1].0 - tab.base);
            let len = (last + TAIL - start).min(tab.size.saturating_sub(start));
            buf.resize(len as usize, 0);
            let n = self.file.read_at(&mut buf, tab.offset + start).unwrap_or(0);
            for &(name, i) in &missing[k..end] {
                let rel = (u64::from(name - tab.base) - start) as usize;
                let Some(tail) = buf[..n].get(rel..) else {
                    continue;
                };
                // Names cut by the window end are left for the one-by-one path.
                if let Some(nul) = tail.iter().position(|&b| b == 0) {
                    let _ = self.display[i].set(display(&tail[..nul], self.demangle));
                }
            }
            k = end;
        }
    }

    /// Like [`lookup`](Self::lookup) with the address given as an offset in the file (as
    /// computed from a `/proc/PID/maps` line: `addr - start + offset`).
    pub fn lookup_file_offset(&self, offset: u64) -> Option<&Arc<str>> {
        self.lookup(self.file_offset_to_vaddr(offset)?)
    }

    /// The ELF virtual address of file offset `offset`, through the `PT_LOAD` segment holding it
    /// (executable segments preferred).
    pub fn file_offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        let inside = |s: &&LoadSegment| offset >= s.offset && offset - s.offset < s.filesz;
        let seg = self
            .segments
            .iter()
            .filter(|s| s.executable)
            .find(inside)
            .or_else(|| self.segments.iter().find(inside))?;
        Some(offset - seg.offset + seg.vaddr)
    }

    /// Uses `other`'s `PT_LOAD` segments and build id (a separate debug file's symbols with the
    /// mapped binary's layout and identity: `objcopy --only-keep-debug` need not keep file
    /// offsets, MiniDebugInfo has no build id).
    pub(crate) fn with_segments_of(mut self, other: &ElfSymbols) -> Self {
        self.segments = other.segments.clone();
        self.build_id = other.build_id.clone();
        self
    }

    /// Records where this file's DWARF is.
    pub(crate) fn with_debug_source(mut self, source: Option<crate::dwarf::DebugSource>) -> Self {
        self.debug = source;
        self
    }

    pub(crate) fn debug_source(&self) -> Option<&crate::dwarf::DebugSource> {
        self.debug.as_ref()
    }

    /// The GNU build id, if the file has one.
    pub fn build_id(&self) -> Option<&[u8]> {
        match &self.build_id {
            Some(BuildId::Gnu(id)) => Some(id),
            _ => None,
        }
    }

    /// Number of function symbols.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the file has no function symbols (stripped of both tables).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The demangling mode display names are computed with.
    pub fn demangle_mode(&self) -> Demangle {
        self.demangle
    }

    /// Index of the symbol covering `vaddr`.
    fn find(&self, vaddr: u64) -> Option<usize> {
        let n = self.addrs.partition_point(|&a| a <= vaddr);
        let covers = |i: usize| {
            let start = self.addrs[i];
            let size = u64::from(self.entries[i].size.max(1));
            vaddr - start < size
        };
        let nearest = n.checked_sub(1)?;
        if covers(nearest) {
            return Some(nearest);
        }
        (nearest.saturating_sub(NESTED_SCAN)..nearest)
            .rev()
            .find(|&i| covers(i))
    }

    /// Reads the NUL-terminated name of symbol `i` from its string table.
    fn raw_name(&self, i: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
        let name = self.entries[i].name;
        let tab = self.strtabs.iter().rev().find(|t| t.base <= name)?;
        let start = u64::from(name - tab.base);
        if let Some(data) = &tab.data {
            let tail = data.get(usize::try_from(start).ok()?..)?;
            let len = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            return Some(tail[..len.min(MAX_NAME)].into());
        }
        let avail = usize::try_from(tab.size.checked_sub(start)?)
            .unwrap_or(usize::MAX)
            .min(MAX_NAME);
        let mut buf = Vec::new();
        let mut chunk = 256;
        while buf.len() < avail {
            let old = buf.len();
            let want = chunk.min(avail - old);
            buf.resize(old + want, 0);
            let n = self
                .file
                .read_at(&mut buf[old..], tab.offset + start + old as u64)
                .ok()?;
            buf.truncate(old + n);
            if let Some(nul) = buf[old..].iter().position(|&b| b == 0) {
                buf.truncate(old + nul);
                return Some(buf.into());
            }
            if n == 0 {
                return None;
            }
            chunk *= 4;
        }
        // No terminator within the table (or the cap): use what there is.
        Some(buf.into())
    }

    fn display_name(&self, i: usize) -> Option<&Arc<str>> {
        let cell = &self.display[i];
        if let Some(name) = cell.get() {
            return Some(name);
        }
        let name = display(&self.raw_name(i)?, self.demangle);
        // A concurrent lookup may have set it first; either value is the same name.
        Some(cell.get_or_init(|| name))
    }
}

/// The display name of raw symbol name `raw`: symbol versions (`memcpy@@GLIBC_2.14`, found in
/// `.symtab`s of debug files) dropped, then demangled per `mode`.
fn display(raw: &[u8], mode: Demangle) -> Arc<str> {
    let raw = match raw.iter().position(|&b| b == b'@') {
        Some(at) if at > 0 => &raw[..at],
        _ => raw,
    };
    let raw = String::from_utf8_lossy(raw);
    Arc::from(demangle(&raw, mode).as_ref())
}

/// A candidate symbol while loading.
#[derive(Clone, Copy)]
struct Candidate {
    addr: u64,
    size: u32,
    name: u32,
    /// Higher wins among symbols at the same address.
    rank: u8,
}

/// Calls `f` on each symbol of the table at `offset..offset + size`, reading it in chunks (no
/// table-sized buffer; big binaries have megabytes of symbols).
fn for_each_symbol<Elf: FileHeader>(
    file: &dyn ReadAt,
    offset: u64,
    size: u64,
    mut f: impl FnMut(&Elf::Sym),
) -> std::io::Result<()> {
    let entry = std::mem::size_of::<Elf::Sym>();
    // u64 backing keeps the buffer aligned for the symbol structs.
    let mut backing = vec![0u64; 64 * 1024 / 8];
    let per_chunk = backing.len() * 8 / entry;
    let count = size / entry as u64;
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(per_chunk as u64) as usize;
        let bytes = &mut bytemuck_bytes(&mut backing)[..n * entry];
        file.read_exact_at(bytes, offset + done * entry as u64)?;
        let syms = object::pod::slice_from_all_bytes::<Elf::Sym>(bytes)
            .map_err(|_| std::io::Error::other("misaligned symbol buffer"))?;
        syms.iter().for_each(&mut f);
        done += n as u64;
    }
    Ok(())
}

/// The bytes of a `u64` buffer.
fn bytemuck_bytes(v: &mut [u64]) -> &mut [u8] {
    object::pod::bytes_of_slice_mut(v)
}

fn load<Elf: FileHeader<Endian = Endianness>>(
    data: &Cache,
    file: &Arc<dyn ReadAt>,
    path: &Path,
    demangle: Demangle,
    inline: u64,
) -> Result<ElfSymbols, ElfError> {
    let header = Elf::parse(data).map_err(|e| malformed(path, e))?;
    let endian = header.endian().map_err(|e| malformed(path, e))?;

    let mut segments = Vec::new();
    if let Ok(phdrs) = header.program_headers(endian, data) {
        for ph in phdrs {
            if ph.p_type(endian) == elf::PT_LOAD {
                segments.push(LoadSegment {
                    offset: ph.p_offset(endian).into(),
                    vaddr: ph.p_vaddr(endian).into(),
                    filesz: ph.p_filesz(endian).into(),
                    executable: ph.p_flags(endian) & elf::PF_X != 0,
                });
            }
        }
    }

    let sections = header
        .sections(endian, data)
        .map_err(|e| malformed(path, e))?;
    let file_len = data.len().unwrap_or(u64::MAX);
    let mut strtabs: Vec<StrTab> = Vec::new();
    let mut next_base = 0u64;
    let mut candidates: Vec<Candidate> = Vec::new();
    for (sh_type, rank_base) in [(elf::SHT_SYMTAB, 1u8), (elf::SHT_DYNSYM, 0u8)] {
        let Some((_, section)) = sections
            .enumerate()
            .find(|(_, s)| s.sh_type(endian) == sh_type)
        else {
            continue;
        };
        let link = object::SectionIndex(section.sh_link(endian) as usize);
        let Ok(strtab) = sections.section(link) else {
            continue;
        };
        let (sym_size, str_size) = (
            section.sh_size(endian).into(),
            strtab.sh_size(endian).into(),
        );
        if sym_size.saturating_add(str_size) > MAX_TABLE_BYTES.min(file_len) {
            tracing::debug!(path = %path.display(), sh_type, "symbol table larger than the file or cap, skipped");
            continue;
        }
        let sym_offset: u64 = section.sh_offset(endian).into();
        if section.sh_type(endian) == elf::SHT_NOBITS
            || sym_offset.saturating_add(sym_size) > file_len
        {
            continue;
        }
        let str_offset: u64 = strtab.sh_offset(endian).into();
        if strtab.sh_type(endian) != elf::SHT_STRTAB
            || str_offset.saturating_add(str_size) > file_len
        {
            continue;
        }
        let Ok(base) = u32::try_from(next_base) else {
            continue;
        };
        let Some(end) = u32::try_from(str_size)
            .ok()
            .and_then(|s| base.checked_add(s))
        else {
            continue;
        };
        next_base = u64::from(end) + 1;
        let data = (str_size <= inline)
            .then(|| {
                let mut buf = vec![0u8; str_size as usize];
                file.read_exact_at(&mut buf, str_offset).ok()?;
                Some(buf.into_boxed_slice())
            })
            .flatten();
        strtabs.push(StrTab {
            base,
            offset: str_offset,
            size: str_size,
            data,
        });
        let before = candidates.len();
        let read = for_each_symbol::<Elf>(&**file, sym_offset, sym_size, |sym| {
            let st_type = sym.st_type();
            if st_type != elf::STT_FUNC && st_type != elf::STT_GNU_IFUNC {
                return;
            }
            let addr: u64 = sym.st_value(endian).into();
            let name = sym.st_name(endian);
            if addr == 0
                || name == 0
                || u64::from(name) >= str_size
                || sym.st_shndx(endian) == elf::SHN_UNDEF
            {
                return;
            }
            let binding = match sym.st_bind() {
                elf::STB_GLOBAL => 2,
                elf::STB_WEAK => 1,
                _ => 0,
            };
            candidates.push(Candidate {
                addr,
                size: u32::try_from(sym.st_size(endian).into()).unwrap_or(u32::MAX),
                name: base + name,
                rank: binding * 2 + rank_base,
            });
        });
        if let Err(error) = read {
            tracing::debug!(path = %path.display(), %error, "unreadable symbol table");
            candidates.truncate(before);
            strtabs.pop();
        }
    }

    // Same address: largest size first, then global over weak over local, .symtab over .dynsym.
    // (Sorting by the address alone and picking within runs is markedly faster than a compound
    // comparison for the 10⁵–10⁶ symbols of big binaries.)
    candidates.sort_unstable_by_key(|c| c.addr);
    candidates.dedup_by(|later, kept| {
        if later.addr != kept.addr {
            return false;
        }
        if (later.size, later.rank) > (kept.size, kept.rank) {
            std::mem::swap(later, kept);
        }
        true
    });

    let addrs: Box<[u64]> = candidates.iter().map(|c| c.addr).collect();
    let entries: Box<[Entry]> = candidates
        .iter()
        .map(|c| Entry {
            size: c.size,
            name: c.name,
        })
        .collect();
    let display = std::iter::repeat_with(OnceLock::new)
        .take(addrs.len())
        .collect();
    Ok(ElfSymbols {
        addrs,
        entries,
        display,
        file: file.clone(),
        strtabs: strtabs.into_boxed_slice(),
        segments: segments.into_boxed_slice(),
        build_id: None,
        demangle,
        debug: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(path: &Path, inline: u64) -> ElfSymbols {
        let file = File::open(path).unwrap();
        ElfHeaders::read(file, path)
            .unwrap()
            .load_inline_up_to(Demangle::Full, inline)
            .unwrap()
    }

    #[test]
    fn names_read_lazily_equal_names_read_whole() {
        let exe = std::env::current_exe().unwrap();
        let whole = load_with(&exe, u64::MAX);
        let lazy = load_with(&exe, 0);
        assert!(whole.strtabs.iter().all(|t| t.data.is_some()));
        assert!(lazy.strtabs.iter().all(|t| t.data.is_none()));
        assert!(whole.len() > 1000, "{whole:?}");
        assert_eq!(whole.len(), lazy.len());
        for &addr in whole.addrs.iter() {
            let (a, b) = (whole.lookup(addr), lazy.lookup(addr));
            assert!(a.is_some_and(|n| !n.is_empty()), "{addr:#x}");
            assert_eq!(a, b, "{addr:#x}");
        }
        // The batch path (window reads) agrees too, misses included.
        let batch = load_with(&exe, 0);
        let mut probe: Vec<u64> = whole.addrs.iter().rev().copied().collect();
        probe.extend([0, 1, u64::MAX]);
        probe.extend(whole.addrs.iter().step_by(7).map(|a| a + 1));
        let got = batch.lookup_many(&probe);
        assert_eq!(got.len(), probe.len());
        for (&addr, name) in probe.iter().zip(got) {
            assert_eq!(name, whole.lookup(addr), "{addr:#x}");
        }
        // This very function is among them, demangled.
        let me = names_read_lazily_equal_names_read_whole as fn() as usize as u64;
        let found = whole.addrs.iter().any(|&a| {
            whole
                .lookup(a)
                .is_some_and(|n| n.ends_with("names_read_lazily_equal_names_read_whole"))
        });
        assert!(found, "{me:#x}");
    }

    #[test]
    fn debuglink_parsing_refuses_bad_contents() {
        // 11 name bytes + NUL end on a 4-byte boundary: the CRC follows directly.
        let mut good = b"lines.debug\0".to_vec();
        good.extend(0x1234_5678u32.to_le_bytes());
        assert_eq!(
            parse_debuglink(&good, true),
            Some(DebugLink {
                name: "lines.debug".into(),
                crc: 0x1234_5678
            })
        );
        assert_eq!(parse_debuglink(&good, false).unwrap().crc, 0x7856_3412);
        for bad in [
            &b""[..],
            b"no-terminator",
            b"\0\0\0\0\x01\x02\x03\x04",
            b"../../etc/passwd\0\0\0\0\x01\x02\x03\x04",
            b"..\0\0\x01\x02\x03\x04",
            b"short\0\0\0\x01\x02",
        ] {
            assert_eq!(parse_debuglink(bad, true), None, "{bad:?}");
        }
    }

    #[test]
    fn file_truncated_after_load_gives_no_name_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy");
        std::fs::copy(std::env::current_exe().unwrap(), &path).unwrap();
        let lazy = load_with(&path, 0);
        let addrs: Vec<u64> = lazy.addrs.iter().copied().take(50).collect();
        assert!(lazy.lookup(addrs[0]).is_some());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // The first name was stored; the others can no longer be read.
        assert!(lazy.lookup(addrs[0]).is_some());
        assert!(addrs[1..].iter().all(|&a| lazy.lookup(a).is_none()));
    }
}
