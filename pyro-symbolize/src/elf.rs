//! Function symbols of one ELF file: `.symtab` and `.dynsym`, as a sorted address array with
//! binary search, names in one arena and display names (demangled per [`Demangle`]) memoised per
//! symbol.

use std::ffi::CStr;
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

/// Headers of an ELF file read so far: enough to get its build id before deciding whether its
/// symbols need loading at all.
pub(crate) struct ElfHeaders {
    path: PathBuf,
    cache: ReadCache<File>,
    build_id: Option<BuildId>,
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
        let cache = ReadCache::new(file);
        let build_id = match FileKind::parse(&cache) {
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
            cache,
            build_id,
        })
    }

    pub(crate) fn build_id(&self) -> Option<&BuildId> {
        self.build_id.as_ref()
    }

    /// Reads the symbol tables.
    pub(crate) fn load(self, demangle: Demangle) -> Result<ElfSymbols, ElfError> {
        let mut table = match FileKind::parse(&self.cache) {
            Ok(FileKind::Elf64) => {
                load::<elf::FileHeader64<Endianness>>(&self.cache, &self.path, demangle)?
            }
            Ok(FileKind::Elf32) => {
                load::<elf::FileHeader32<Endianness>>(&self.cache, &self.path, demangle)?
            }
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

fn build_id<Elf: FileHeader<Endian = Endianness>>(
    data: &ReadCache<File>,
    path: &Path,
) -> Result<Option<BuildId>, ElfError> {
    let header = Elf::parse(data).map_err(|e| malformed(path, e))?;
    let endian = header.endian().map_err(|e| malformed(path, e))?;
    let sections = header
        .sections(endian, data)
        .map_err(|e| malformed(path, e))?;
    let mut go = None;
    for section in sections.iter() {
        if section.sh_type(endian) != elf::SHT_NOTE {
            continue;
        }
        // A broken note section only costs us the build id, not the symbols.
        let Ok(Some(mut notes)) = section.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == elf::ELF_NOTE_GNU && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
                return Ok(Some(BuildId::Gnu(note.desc().into())));
            }
            if note.name() == b"Go" && note.n_type(endian) == 4 {
                go = Some(BuildId::Go(note.desc().into()));
            }
        }
    }
    Ok(go)
}

/// One symbol of the sorted table (its address is in the parallel `addrs` array).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Size in bytes; 0 when the symbol has none (then it matches its exact address only).
    size: u32,
    /// Offset of the NUL-terminated name in the arena.
    name: u32,
}

/// Function symbols of one ELF file, sorted for lookup by ELF virtual address.
///
/// Names are kept in one arena (the file's string tables); the display name of a symbol
/// (demangled per the table's [`Demangle`] mode) is computed on its first lookup and then stored,
/// so repeated lookups cost a binary search and a reference-count increment.
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
    arena: Box<[u8]>,
    segments: Box<[LoadSegment]>,
    build_id: Option<BuildId>,
    demangle: Demangle,
}

impl std::fmt::Debug for ElfSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfSymbols")
            .field("symbols", &self.addrs.len())
            .field("arena_bytes", &self.arena.len())
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

    /// The display name of the function containing ELF virtual address `vaddr`.
    pub fn lookup(&self, vaddr: u64) -> Option<&Arc<str>> {
        let i = self.find(vaddr)?;
        Some(self.display_name(i))
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

    fn raw_name(&self, i: usize) -> &[u8] {
        let tail = self
            .arena
            .get(self.entries[i].name as usize..)
            .unwrap_or(&[]);
        CStr::from_bytes_until_nul(tail).map_or(tail, CStr::to_bytes)
    }

    fn display_name(&self, i: usize) -> &Arc<str> {
        self.display[i].get_or_init(|| {
            let raw = String::from_utf8_lossy(self.raw_name(i));
            Arc::from(demangle(&raw, self.demangle).as_ref())
        })
    }
}

/// A candidate symbol while loading.
#[derive(Clone, Copy)]
struct Candidate {
    addr: u64,
    size: u64,
    name: u32,
    /// Higher wins among symbols at the same address.
    rank: u8,
}

fn load<Elf: FileHeader<Endian = Endianness>>(
    data: &ReadCache<File>,
    path: &Path,
    demangle: Demangle,
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
    let mut arena: Vec<u8> = Vec::new();
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
        let symbols = match section.data_as_array::<Elf::Sym, _>(endian, data) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "unreadable symbol table");
                continue;
            }
        };
        let strings = match strtab.data(endian, data) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "unreadable string table");
                continue;
            }
        };
        let Ok(base) = u32::try_from(arena.len()) else {
            continue;
        };
        if u32::try_from(arena.len() + strings.len() + 1).is_err() {
            continue;
        }
        arena.extend_from_slice(strings);
        // A string table should end in NUL; make sure the last name is terminated.
        arena.push(0);
        candidates.reserve(symbols.len());
        for sym in symbols {
            let st_type = sym.st_type();
            if st_type != elf::STT_FUNC && st_type != elf::STT_GNU_IFUNC {
                continue;
            }
            let addr: u64 = sym.st_value(endian).into();
            let name = sym.st_name(endian);
            if addr == 0 || name == 0 || sym.st_shndx(endian) == elf::SHN_UNDEF {
                continue;
            }
            if name as usize >= strings.len() {
                continue;
            }
            let binding = match sym.st_bind() {
                elf::STB_GLOBAL => 2,
                elf::STB_WEAK => 1,
                _ => 0,
            };
            candidates.push(Candidate {
                addr,
                size: sym.st_size(endian).into(),
                name: base + name,
                rank: binding * 2 + rank_base,
            });
        }
    }

    // Same address: largest size first, then global over weak over local, .symtab over .dynsym.
    candidates.sort_unstable_by(|a, b| {
        a.addr
            .cmp(&b.addr)
            .then(b.size.cmp(&a.size))
            .then(b.rank.cmp(&a.rank))
    });
    candidates.dedup_by_key(|c| c.addr);

    let addrs: Box<[u64]> = candidates.iter().map(|c| c.addr).collect();
    let entries: Box<[Entry]> = candidates
        .iter()
        .map(|c| Entry {
            size: u32::try_from(c.size).unwrap_or(u32::MAX),
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
        arena: arena.into_boxed_slice(),
        segments: segments.into_boxed_slice(),
        build_id: None,
        demangle,
    })
}
