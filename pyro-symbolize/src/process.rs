//! Per-process symbol state: the executable mappings of one pid and the symbol table of each.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pyro_core::rootfs::{self, RootDir, RootfsError};

use crate::dwarf::{DebugSource, DwarfCache};
use crate::elf::{BuildId, ElfHeaders, ElfSymbols};
use crate::maps::{MapEntry, parse_maps};
use crate::perfmap::PerfMap;
use crate::{Demangle, FileInfo, Frame, SymbolizerConfig};

/// Shared caches a process consults when it first needs a file's symbols.
pub(crate) struct Tables<'a> {
    pub(crate) by_build_id: &'a moka::sync::Cache<BuildId, Arc<ElfSymbols>>,
    pub(crate) by_file: &'a moka::sync::Cache<(u64, u64), Arc<ElfSymbols>>,
    pub(crate) demangle: Demangle,
    pub(crate) unknown: &'a Arc<str>,
    /// DWARF of all files, when line info is on.
    pub(crate) dwarf: Option<&'a DwarfCache>,
    pub(crate) stats: &'a Stats,
    /// Module of frames named by a perf map.
    pub(crate) jit_module: &'a Arc<str>,
    /// The size caps (`max_*`).
    pub(crate) config: &'a SymbolizerConfig,
}

/// Counters of the symbolizer.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Debug files named by a `.gnu_debuglink` whose CRC32 did not match.
    pub(crate) debuglink_crc_mismatches: std::sync::atomic::AtomicU64,
    /// MiniDebugInfo sections that could not be read.
    pub(crate) minidebuginfo_errors: std::sync::atomic::AtomicU64,
    /// Perf map lines that are not `START SIZE name`.
    pub(crate) perf_map_garbage_lines: std::sync::atomic::AtomicU64,
    /// Perf map reads cut at the size cap.
    pub(crate) perf_maps_truncated: std::sync::atomic::AtomicU64,
}

/// Where the host keeps debug files (Debian's `*-dbg`/`*-dbgsym` packages): searched after the
/// process's own root, as a root of its own so that names from the process (its binary's
/// directory) cannot lead out of it.
const HOST_DEBUG_DIR: &str = "/usr/lib/debug";

#[derive(Debug)]
enum TableState {
    NotLoaded,
    Loaded(Arc<ElfSymbols>),
    Failed,
}

#[derive(Debug)]
struct Mapping {
    entry: MapEntry,
    /// Basename of the mapped file (or `[vdso]`…), `[unknown]` for anonymous memory.
    module: Arc<str>,
    table: TableState,
    /// What frames in this mapping report about its file (set once its table is loaded).
    info: Option<Arc<FileInfo>>,
}

/// Symbol state of one process, shared through the pid cache.
#[derive(Debug)]
pub(crate) struct ProcessState {
    pid: u32,
    /// Where procfs is mounted.
    proc_root: PathBuf,
    /// `<proc_root>/<pid>`.
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    read_once: bool,
    mappings: Vec<Mapping>,
    /// Re-reads of the maps (triggered by unmapped addresses) that found nothing new in a row.
    fruitless: u32,
    /// Calls with unmapped addresses to let pass before re-reading again.
    skip: u32,
    /// The process's JIT perf map, opened on the first address in anonymous executable memory.
    perf_map: Option<PerfMap>,
}

/// Most calls with unmapped addresses skipped between two fruitless re-reads.
const MAX_SKIP: u32 = 256;

impl ProcessState {
    pub(crate) fn new(pid: u32, proc_root: &std::path::Path) -> Self {
        Self {
            pid,
            proc_root: proc_root.to_owned(),
            dir: proc_root.join(pid.to_string()),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn symbolize(&self, addrs: &[u64], tables: &Tables<'_>) -> Vec<Frame> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.read_once {
            self.refresh(&mut inner, tables);
        }
        let mut refreshed = false;
        let mut perf_refreshed = false;
        let mut frames = Vec::with_capacity(addrs.len());
        // Stacks mostly stay within few mappings: remember the last one.
        let mut last: Option<usize> = None;
        for &addr in addrs {
            let mut idx = last
                .filter(|&i| {
                    inner.mappings[i].entry.start <= addr && addr < inner.mappings[i].entry.end
                })
                .or_else(|| find(&inner.mappings, addr));
            if idx.is_none() && !refreshed && plausible_user_address(addr) {
                // An address outside every known mapping: the process may have mapped something
                // new (dlopen, JIT). Re-read the maps, at most once per call, and back off when
                // re-reads keep finding nothing new (garbage addresses from broken unwinding).
                refreshed = true;
                if inner.skip > 0 {
                    inner.skip -= 1;
                } else {
                    let before: Vec<(u64, u64, u64)> =
                        inner.mappings.iter().map(|m| m.entry.key()).collect();
                    self.refresh(&mut inner, tables);
                    if inner.mappings.iter().map(|m| m.entry.key()).eq(before) {
                        inner.fruitless = inner.fruitless.saturating_add(1);
                        inner.skip = 1u32
                            .checked_shl(inner.fruitless)
                            .unwrap_or(MAX_SKIP)
                            .min(MAX_SKIP);
                    } else {
                        inner.fruitless = 0;
                    }
                    idx = find(&inner.mappings, addr);
                }
            }
            last = idx;
            let Some(i) = idx else {
                frames.push(Frame::unknown(tables.unknown));
                continue;
            };
            if inner.mappings[i].entry.path.is_empty() {
                // Anonymous executable memory: JIT code, named by the runtime's perf map.
                let frame = self.jit_frame(&mut inner, addr, &mut perf_refreshed, tables);
                frames.push(frame);
                continue;
            }
            let frame = self.lookup(&mut inner.mappings[i], addr, tables);
            frames.push(frame);
        }
        frames
    }

    /// The frame of `addr` in anonymous executable memory, from `/tmp/perf-<nspid>.map` as the
    /// process sees it (its mount namespace, its pid namespace's pid). The map is re-read when
    /// it changed size, at most once per call and only for an address it does not name yet.
    fn jit_frame(
        &self,
        inner: &mut Inner,
        addr: u64,
        refreshed: &mut bool,
        tables: &Tables<'_>,
    ) -> Frame {
        let map = inner.perf_map.get_or_insert_with(|| {
            let nspid = ns_pid(&self.dir).unwrap_or(self.pid);
            PerfMap::new(
                self.dir.join("root"),
                PathBuf::from(format!("/tmp/perf-{nspid}.map")),
                tables.config.max_perf_map_size,
            )
        });
        if map.lookup(addr).is_none() && !*refreshed {
            *refreshed = true;
            if let Some(stats) = map.refresh() {
                use std::sync::atomic::Ordering::Relaxed;
                tables
                    .stats
                    .perf_map_garbage_lines
                    .fetch_add(stats.garbage_lines, Relaxed);
                if stats.truncated {
                    tables.stats.perf_maps_truncated.fetch_add(1, Relaxed);
                    tracing::debug!(
                        pid = self.pid,
                        limit = tables.config.max_perf_map_size,
                        "perf map over the size cap, cut"
                    );
                }
            }
        }
        match map.lookup(addr) {
            Some(name) => Frame::named(name.clone(), tables.jit_module.clone(), true),
            None => Frame::unknown(tables.unknown),
        }
    }

    fn lookup(&self, m: &mut Mapping, addr: u64, tables: &Tables<'_>) -> Frame {
        if matches!(m.table, TableState::NotLoaded) {
            m.table = match self.load(&m.entry, tables) {
                Some(t) => {
                    m.info = Some(Arc::new(file_info(&m.entry, &t, tables)));
                    TableState::Loaded(t)
                }
                None => TableState::Failed,
            };
        }
        let mut frame = Frame::named(m.module.clone(), m.module.clone(), false);
        let TableState::Loaded(table) = &m.table else {
            return frame;
        };
        let Some(vaddr) = (addr - m.entry.start)
            .checked_add(m.entry.offset)
            .and_then(|o| table.file_offset_to_vaddr(o))
        else {
            return frame;
        };
        frame.address = vaddr;
        frame.file = m.info.clone();
        let name = table.lookup(vaddr);
        if let Some(name) = name {
            frame.name = name.clone();
            frame.resolved = true;
        }
        if let (Some(cache), Some(source)) = (tables.dwarf, table.debug_source())
            && let Some(info) = cache.get(source, tables.demangle)
        {
            let lines = info.lookup_or_symbol(vaddr, name);
            if let Some(outer) = lines.last().filter(|_| !frame.resolved)
                && !outer.function.is_empty()
            {
                // No symbol, but DWARF names the function.
                frame.name = outer.function.clone();
                frame.resolved = true;
            }
            frame.lines = lines.into();
        }
        frame
    }

    /// Finds (through the caches) or loads the symbols of a mapped file.
    fn load(&self, e: &MapEntry, tables: &Tables<'_>) -> Option<Arc<ElfSymbols>> {
        let key = (e.dev, e.inode);
        let (headers, path, binary) = if e.path == "[vdso]" {
            let (h, p) = self.vdso(e)?;
            (h, p, None)
        } else {
            if !e.is_file() {
                return None;
            }
            if let Some(t) = tables.by_file.get(&key) {
                return Some(t);
            }
            let (file, path) = self.open(e, tables)?;
            let dup = file.try_clone().ok();
            match ElfHeaders::read(file, &path) {
                Ok(h) => (h, path, dup),
                Err(error) => {
                    tracing::debug!(pid = self.pid, path = %path.display(), %error, "no symbols for mapping");
                    return None;
                }
            }
        };
        let build_id = headers.build_id().cloned();
        let is_file = e.is_file();
        if let Some(id) = &build_id
            && let Some(t) = tables.by_build_id.get(id)
        {
            if is_file {
                tables.by_file.insert(key, t.clone());
            }
            return Some(t);
        }
        let want_debug_file =
            !headers.has_symtab() || (tables.dwarf.is_some() && !headers.has_debug_info());
        let debug = if want_debug_file {
            self.debug_file(e, &headers, tables)
        } else {
            None
        };
        // DWARF from the binary itself, else from its debug file.
        let source = match (&binary, &debug) {
            (Some(f), _) if headers.has_debug_info() => DebugSource::new(f, &path),
            (_, Some((d, f, p))) if d.has_debug_info() => DebugSource::new(f, p),
            _ => None,
        };
        // MiniDebugInfo: the symbols a stripped binary carries compressed in itself.
        let mini = if !headers.has_symtab() && debug.is_none() {
            match headers.mini_debuginfo(tables.config.max_minidebuginfo_size) {
                Ok(m) => m,
                Err(error) => {
                    tables
                        .stats
                        .minidebuginfo_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(pid = self.pid, %error, "MiniDebugInfo not used");
                    None
                }
            }
        } else {
            None
        };
        let table = match headers.load(tables.demangle) {
            Ok(t) => t,
            Err(error) => {
                tracing::debug!(pid = self.pid, path = %path.display(), %error, "no symbols for mapping");
                return None;
            }
        };
        let extra = debug.map(|(d, _, _)| d).or(mini);
        let table = match extra.map(|d| d.load(tables.demangle)) {
            Some(Ok(d)) if d.len() > table.len() => d.with_segments_of(&table),
            _ => table,
        };
        let table = Arc::new(table.with_debug_source(source));
        tracing::trace!(pid = self.pid, path = %path.display(), symbols = table.len(), "loaded symbols");
        if let Some(id) = build_id {
            tables.by_build_id.insert(id, table.clone());
        }
        if is_file {
            tables.by_file.insert(key, table.clone());
        }
        Some(table)
    }

    /// The process's vDSO image, read from `/proc/PID/mem` (the kernel's image has a GNU build
    /// id, so all processes share one table through the build-id cache).
    fn vdso(&self, e: &MapEntry) -> Option<(ElfHeaders, PathBuf)> {
        use std::os::unix::fs::FileExt;
        /// vDSOs are a few pages; refuse anything odd.
        const MAX_VDSO: u64 = 1 << 20;
        let len = e.end - e.start;
        if len > MAX_VDSO {
            return None;
        }
        let path = self.dir.join("mem");
        let mem = File::open(&path).ok()?;
        let mut bytes = vec![0u8; len as usize];
        if let Err(error) = mem.read_exact_at(&mut bytes, e.start) {
            tracing::debug!(pid = self.pid, %error, "cannot read the vdso");
            return None;
        }
        let name = PathBuf::from("[vdso]");
        let headers = ElfHeaders::from_memory(bytes.into(), &name).ok()?;
        Some((headers, name))
    }

    /// The separate debug file of a mapped file, looked up as gdb does, inside the process's
    /// root first (resolved with [`RootDir`]: the process's symlinks cannot lead out of it),
    /// then in the host's `/usr/lib/debug`: by GNU build id
    /// (`/usr/lib/debug/.build-id/ab/cdef….debug`, as Debian's `*-dbg`/`*-dbgsym` packages lay
    /// them out; the build id must match), then by `.gnu_debuglink` name in the binary's
    /// directory, its `.debug/` and `/usr/lib/debug/<directory>` (the CRC32 must match; a
    /// mismatch is counted). Files over [`SymbolizerConfig::max_debug_file_size`] are skipped.
    fn debug_file(
        &self,
        e: &MapEntry,
        headers: &ElfHeaders,
        tables: &Tables<'_>,
    ) -> Option<(ElfHeaders, File, PathBuf)> {
        use std::fmt::Write;
        let limit = tables.config.max_debug_file_size;
        let process_root = RootDir::of_process(&self.proc_root, self.pid)
            .inspect_err(|error| tracing::debug!(pid = self.pid, %error, "no debug files from the process's root"))
            .ok();
        let host = RootDir::open(HOST_DEBUG_DIR).ok();
        let open = |root: &RootDir, path: &Path| -> Option<(File, PathBuf)> {
            match root.open_file(path, limit) {
                Ok(file) => Some((file, root.path().join(path))),
                Err(error) => {
                    if !error.is_not_found() {
                        tracing::debug!(pid = self.pid, %error, "debug file not used");
                    }
                    None
                }
            }
        };
        if let Some(BuildId::Gnu(id)) = headers.build_id()
            && let Some((first, rest)) = id.split_first()
        {
            let mut name = format!("{first:02x}/");
            for b in rest {
                let _ = write!(name, "{b:02x}");
            }
            name.push_str(".debug");
            let candidates = [
                (process_root.as_ref(), Path::new("usr/lib/debug/.build-id")),
                (host.as_ref(), Path::new(".build-id")),
            ];
            for (root, dir) in candidates {
                let Some((file, path)) = root.and_then(|r| open(r, &dir.join(&name))) else {
                    continue;
                };
                let Ok(dup) = file.try_clone() else { continue };
                let Ok(h) = ElfHeaders::read(file, &path) else {
                    continue;
                };
                if matches!(h.build_id(), Some(BuildId::Gnu(d)) if **d == **id) {
                    return Some((h, dup, path));
                }
            }
        }
        let link = headers.debuglink()?;
        let dir = Path::new(&e.path).parent()?.strip_prefix("/").ok()?;
        let mut candidates: Vec<(&RootDir, PathBuf)> = Vec::new();
        if let Some(root) = &process_root {
            candidates.push((root, dir.join(&link.name)));
            candidates.push((root, dir.join(".debug").join(&link.name)));
            candidates.push((root, Path::new("usr/lib/debug").join(dir).join(&link.name)));
        }
        if let Some(root) = &host {
            candidates.push((root, dir.join(&link.name)));
        }
        let mut seen: Vec<(u64, u64)> = vec![(e.dev_t(), e.inode)];
        for (root, path) in candidates {
            let Some((file, path)) = open(root, &path) else {
                continue;
            };
            let Ok(md) = file.metadata() else { continue };
            let key = (md.dev(), md.ino());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            match crc32(&file) {
                Ok(crc) if crc == link.crc => {}
                Ok(crc) => {
                    tables
                        .stats
                        .debuglink_crc_mismatches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(
                        pid = self.pid,
                        path = %path.display(),
                        expected = format_args!("{:08x}", link.crc),
                        found = format_args!("{crc:08x}"),
                        "debug file named by .gnu_debuglink has the wrong CRC, not used"
                    );
                    continue;
                }
                Err(_) => continue,
            }
            let Ok(dup) = file.try_clone() else { continue };
            if let Ok(h) = ElfHeaders::read(file, &path) {
                return Some((h, dup, path));
            }
        }
        None
    }

    /// Opens the mapped file: through `/proc/PID/map_files/<start>-<end>` (the very file the
    /// process maps: deleted, replaced or in another mount namespace alike, no path resolution
    /// at all), else, when that is refused (it needs `CAP_SYS_ADMIN`), by its path resolved
    /// inside the process's root with [`RootDir`]. Files over
    /// [`SymbolizerConfig::max_elf_file_size`] are refused.
    fn open(&self, e: &MapEntry, tables: &Tables<'_>) -> Option<(File, PathBuf)> {
        let limit = tables.config.max_elf_file_size;
        match rootfs::open_mapped(&self.proc_root, self.pid, e.start, e.end, limit) {
            Ok(file) => {
                let path = self
                    .dir
                    .join("map_files")
                    .join(format!("{:x}-{:x}", e.start, e.end));
                return Some((file, path));
            }
            Err(error @ RootfsError::TooLarge { .. }) => {
                tracing::debug!(pid = self.pid, %error, "no symbols for mapping");
                return None;
            }
            Err(error) => {
                tracing::trace!(pid = self.pid, %error, "map_files not usable, opening the path");
            }
        }
        if e.deleted {
            return None;
        }
        let root = RootDir::of_process(&self.proc_root, self.pid)
            .inspect_err(|error| tracing::debug!(pid = self.pid, %error, "no symbols for mapping"))
            .ok()?;
        let file = root
            .open_file(&e.path, limit)
            .inspect_err(|error| tracing::debug!(pid = self.pid, %error, "no symbols for mapping"))
            .ok()?;
        // The path may now name a different file (upgraded package): check the inode. (Not the
        // device: on overlayfs the maps show the underlying file's device, stat the overlay's.)
        if !file.metadata().is_ok_and(|md| md.ino() == e.inode) {
            tracing::debug!(pid = self.pid, path = %e.path, "the mapped path names another file now");
            return None;
        }
        Some((file, root.path().join(e.path.trim_start_matches('/'))))
    }

    fn refresh(&self, inner: &mut Inner, tables: &Tables<'_>) {
        inner.read_once = true;
        let text = match std::fs::read_to_string(self.dir.join("maps")) {
            Ok(t) => t,
            Err(error) => {
                tracing::debug!(pid = self.pid, %error, "cannot read maps");
                inner.mappings.clear();
                return;
            }
        };
        let mut old = std::mem::take(&mut inner.mappings);
        inner.mappings = parse_maps(&text)
            .into_iter()
            .map(|entry| {
                // Keep what was loaded for mappings that did not change.
                let table = old
                    .iter_mut()
                    .find(|o| o.entry == entry)
                    .map_or(TableState::NotLoaded, |o| {
                        std::mem::replace(&mut o.table, TableState::NotLoaded)
                    });
                Mapping {
                    module: module_name(&entry, tables.unknown),
                    entry,
                    table,
                    info: None,
                }
            })
            .collect();
    }
}

fn file_info(e: &MapEntry, table: &ElfSymbols, tables: &Tables<'_>) -> FileInfo {
    use std::fmt::Write;
    let mut build_id = String::new();
    for b in table.build_id().unwrap_or_default() {
        let _ = write!(build_id, "{b:02x}");
    }
    FileInfo {
        path: Arc::from(e.path.as_str()),
        build_id: Arc::from(build_id),
        has_debug_info: tables.dwarf.is_some() && table.debug_source().is_some(),
    }
}

/// The process's pid in its own pid namespace (last `NSpid:` field of its status), which is
/// the pid a runtime inside a container names its perf map after.
fn ns_pid(dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// CRC32 (the `.gnu_debuglink` one: IEEE, as zlib computes it) of a whole file.
fn crc32(file: &File) -> std::io::Result<u32> {
    use std::io::Read;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut reader = file;
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(hasher.finalize()),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// Whether `addr` could be a user-space code address (not the null page, not beyond the 47-bit
/// (or 56-bit) canonical user range): only those are worth re-reading the maps for.
fn plausible_user_address(addr: u64) -> bool {
    (0x1000..0x0100_0000_0000_0000).contains(&addr)
}

fn find(mappings: &[Mapping], addr: u64) -> Option<usize> {
    let i = mappings
        .partition_point(|m| m.entry.start <= addr)
        .checked_sub(1)?;
    (addr < mappings[i].entry.end).then_some(i)
}

fn module_name(e: &MapEntry, unknown: &Arc<str>) -> Arc<str> {
    if e.path.is_empty() {
        return unknown.clone();
    }
    if e.path.starts_with('/') {
        let base = e.path.rsplit('/').next().unwrap_or(&e.path);
        if !base.is_empty() {
            return Arc::from(base);
        }
    }
    Arc::from(e.path.as_str())
}
