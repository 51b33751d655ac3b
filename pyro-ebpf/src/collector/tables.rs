//! Unwind tables for the kernel's table unwinder: built with `pyro-unwind` from the executable
//! mappings of profiled processes (one table per file identity, shared by every process that
//! maps the file), written into the one global row array and the page index, evicted least
//! recently seen first under the memory budget.
//!
//! Layout in the kernel (see `pyro_ebpf_common::unwind`): each table takes `rows + 1` slots of
//! the row array, the first an END sentinel (so a pc before the table's first row finds no
//! row, never another file's), and one page-index entry per 64 KiB page, whose `first` is the
//! global index. Mappings go into the LPM trie as exact prefixes of their address range.
//!
//! Building a table (parsing a file's CFI) can take long for a large binary, so it happens on
//! a builder thread: the collector asks for the files it meets and installs the finished
//! tables at its next poll. Until then the kernel follows frame pointers in that mapping.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pyro_ebpf_common::unwind::{
    CfaType, MAPPING_KEY_FIXED_BITS, Mapping, MappingKind, PageKey, PageValue, Row, lpm_prefixes,
};
use pyro_unwind::{FileId, Table};

use crate::bpf::{PAGE_ENTRY_BYTES, UnwindMaps};
use crate::metrics::Metrics;

/// How often the mappings of a process with tables are re-read (dlopen, exec).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// A table in the kernel.
#[derive(Debug)]
struct Loaded {
    /// First slot (the sentinel) in the row array.
    base: u32,
    /// Slots taken (rows + 1).
    slots: u32,
    /// Page numbers in the page index.
    pages: Vec<u64>,
    /// Unsupported rows of the table.
    unsupported: u64,
    /// Last time a process using it was (re)loaded or sampled.
    last_seen: Instant,
}

impl Loaded {
    fn bytes(&self) -> u64 {
        u64::from(self.slots) * size_of::<Row>() as u64 + self.pages.len() as u64 * PAGE_ENTRY_BYTES
    }
}

/// One file mapping of a process as it was loaded.
#[derive(Debug, Clone)]
struct ProcMapping {
    start: u64,
    end: u64,
    offset: u64,
    inode: u64,
    file: Option<FileId>,
    /// Whether the trie has the mapping (its file's table was loaded once).
    inserted: bool,
}

impl ProcMapping {
    fn same_range(&self, other: &Self) -> bool {
        (self.start, self.end, self.offset, self.inode)
            == (other.start, other.end, other.offset, other.inode)
    }
}

/// A table to build: the file behind `pid`'s mapping at `start..end`.
#[derive(Debug)]
struct Request {
    file: FileId,
    pid: u32,
    start: u64,
    end: u64,
}

/// A finished (or failed) build.
#[derive(Debug)]
struct Built {
    file: FileId,
    pid: u32,
    table: Result<Table, String>,
}

/// The builder thread: requests in, tables out. Dropping it ends the thread (its request
/// channel closes).
#[derive(Debug)]
struct Builder {
    requests: mpsc::Sender<Request>,
    built: mpsc::Receiver<Built>,
}

impl Builder {
    fn spawn(proc_root: PathBuf) -> Option<Self> {
        let (requests, rx) = mpsc::channel::<Request>();
        let (tx, built) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("pyro-unwind-tables".into())
            .spawn(move || {
                for r in rx {
                    let table = open_mapped(&proc_root, r.pid, r.start, r.end)
                        .map_err(|e| e.to_string())
                        .and_then(|(map, _)| Table::from_elf(&map).map_err(|e| e.to_string()));
                    let done = Built {
                        file: r.file,
                        pid: r.pid,
                        table,
                    };
                    if tx.send(done).is_err() {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Self { requests, built }),
            Err(error) => {
                tracing::warn!(%error, "Could not start the unwind-table builder; frame pointers only.");
                None
            }
        }
    }
}

#[derive(Debug)]
struct ProcTables {
    mappings: Vec<ProcMapping>,
    last_scan: Instant,
}

/// Why a file got no table (kept so it is not retried on every scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    inode: u64,
}

/// The tables of every profiled process (user-space bookkeeping of the kernel maps).
#[derive(Debug)]
pub(super) struct Tables {
    budget: u64,
    files: HashMap<FileId, Loaded>,
    /// Files (by device and inode) whose table could not be built, and their identity.
    identities: HashMap<FileKey, Option<FileId>>,
    procs: HashMap<u32, ProcTables>,
    /// Free slot ranges of the row array, sorted by start, merged.
    free: Vec<(u32, u32)>,
    bytes: u64,
    proc_root: PathBuf,
    /// `None` when the thread could not start (no tables then).
    builder: Option<Builder>,
    /// Files asked for and not built yet.
    pending: HashSet<FileId>,
    /// Files whose table could not be built or loaded (not asked for again).
    failed: HashSet<FileId>,
}

/// Files remembered as failed before the set is cleared (and they may be tried again).
const MAX_FAILED: usize = 65_536;

impl Tables {
    pub(super) fn new(maps: &UnwindMaps, budget: u64, proc_root: PathBuf) -> Self {
        Self {
            budget,
            files: HashMap::new(),
            identities: HashMap::new(),
            procs: HashMap::new(),
            free: vec![(0, maps.sizes.rows)],
            bytes: 0,
            builder: Builder::spawn(proc_root.clone()),
            proc_root,
            pending: HashSet::new(),
            failed: HashSet::new(),
        }
    }

    /// Installs the tables the builder finished; with `wait`, waits until nothing is pending
    /// or the deadline passes.
    pub(super) fn complete(
        &mut self,
        maps: &mut UnwindMaps,
        wait: Option<Instant>,
        metrics: &Metrics,
    ) {
        loop {
            let Some(builder) = &self.builder else {
                return;
            };
            let next = match wait {
                Some(deadline) if !self.pending.is_empty() => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    builder.built.recv_timeout(left).ok()
                }
                _ => builder.built.try_recv().ok(),
            };
            let Some(built) = next else {
                return;
            };
            self.pending.remove(&built.file);
            match built.table {
                Ok(table) => self.install(maps, built.pid, built.file, &table, metrics),
                Err(error) => {
                    tracing::debug!(pid = built.pid, %error, "No unwind table for the mapping.");
                    self.fail(built.file, metrics);
                }
            }
        }
    }

    fn fail(&mut self, file: FileId, metrics: &Metrics) {
        metrics.unwind_table_errors.inc();
        if self.failed.len() >= MAX_FAILED {
            self.failed.clear();
        }
        self.failed.insert(file);
    }

    /// The processes whose mappings are loaded.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Whether `pid`'s mappings are loaded.
    pub(super) fn has(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Loads the tables of a process first seen (or re-reads its mappings when they may have
    /// changed), and marks its files as seen now.
    pub(super) fn seen(&mut self, maps: &mut UnwindMaps, pid: u32, metrics: &Metrics) {
        let now = Instant::now();
        if let Some(p) = self.procs.get(&pid)
            && now.duration_since(p.last_scan) < RESCAN_INTERVAL
        {
            for m in &p.mappings {
                if let Some(f) = m.file.and_then(|f| self.files.get_mut(&f)) {
                    f.last_seen = now;
                }
            }
            return;
        }
        self.scan(maps, pid, now, metrics);
    }

    fn scan(&mut self, maps: &mut UnwindMaps, pid: u32, now: Instant, metrics: &Metrics) {
        let exec = match pyro_core::proc::exec_maps(&self.proc_root, pid) {
            Ok(exec) => exec,
            Err(error) => {
                tracing::debug!(pid, %error, "Could not read the mappings for unwind tables.");
                self.forget(maps, pid);
                return;
            }
        };
        let old = self
            .procs
            .remove(&pid)
            .map(|p| p.mappings)
            .unwrap_or_default();
        let mut mappings = Vec::with_capacity(exec.len());
        for m in &exec {
            let mut mapping = ProcMapping {
                start: m.start,
                end: m.end,
                offset: m.offset,
                inode: m.inode,
                file: None,
                inserted: false,
            };
            match old.iter().find(|o| o.same_range(&mapping)) {
                Some(prev) => {
                    mapping.file = prev.file;
                    mapping.inserted = prev.inserted;
                }
                None if m.inode != 0 && m.path.is_some() => {
                    mapping.file = self.identify(pid, m.start, m.end, m.dev, m.inode);
                }
                None => {}
            }
            mappings.push(mapping);
        }
        // Drop the trie entries of mappings that went away or changed.
        for o in &old {
            if o.inserted && !mappings.iter().any(|m| m.same_range(o)) {
                remove_mapping(maps, pid, o);
            }
        }
        for m in &mut mappings {
            let Some(file) = m.file else {
                // No table (anonymous, JIT, unreadable): the trie has no entry, the kernel
                // takes the frame pointer there.
                continue;
            };
            match self.files.get_mut(&file) {
                Some(f) => {
                    f.last_seen = now;
                    if !m.inserted {
                        m.inserted = insert_mapping(maps, &self.proc_root, pid, m, file);
                    }
                }
                None => self.request(pid, m, file),
            }
        }
        if let Err(error) = maps.procs.insert(pid, 1, 0) {
            tracing::debug!(pid, %error, "Could not add the process to the unwinder's map.");
        }
        self.procs.insert(
            pid,
            ProcTables {
                mappings,
                last_scan: now,
            },
        );
        metrics.unwind_table_bytes.set(self.bytes as i64);
    }

    /// The identity of the file mapped at `start..end` in `pid`, cached by device and inode.
    fn identify(&mut self, pid: u32, start: u64, end: u64, dev: u64, inode: u64) -> Option<FileId> {
        let key = FileKey { dev, inode };
        if let Some(id) = self.identities.get(&key) {
            return *id;
        }
        let id = open_mapped(&self.proc_root, pid, start, end)
            .map(|(map, file)| {
                file.metadata()
                    .ok()
                    .map(|meta| FileId::of_file(&map, &meta))
            })
            .ok()
            .flatten();
        if self.identities.len() >= 65_536 {
            self.identities.clear();
        }
        self.identities.insert(key, id);
        id
    }

    /// Asks the builder for `file`'s table (once while it is pending; never after it failed).
    fn request(&mut self, pid: u32, m: &ProcMapping, file: FileId) {
        if self.pending.contains(&file) || self.failed.contains(&file) {
            return;
        }
        let Some(builder) = &self.builder else {
            return;
        };
        let request = Request {
            file,
            pid,
            start: m.start,
            end: m.end,
        };
        if builder.requests.send(request).is_ok() {
            self.pending.insert(file);
        }
    }

    /// Loads a built table into the kernel (evicting the least recently seen ones beyond the
    /// budget), then the trie entries of every process mapping the file.
    fn install(
        &mut self,
        maps: &mut UnwindMaps,
        pid: u32,
        file: FileId,
        table: &Table,
        metrics: &Metrics,
    ) {
        if self.files.contains_key(&file) {
            return;
        }
        let now = Instant::now();
        let slots = table.rows().len() as u64 + 1;
        let bytes = slots * size_of::<Row>() as u64 + table.pages().len() as u64 * PAGE_ENTRY_BYTES;
        if bytes > self.budget || slots > u64::from(maps.sizes.rows) {
            tracing::debug!(pid, bytes, "Unwind table larger than the whole budget.");
            self.fail(file, metrics);
            return;
        }
        let slots = slots as u32;
        let base = loop {
            let pages_fit =
                self.page_entries() + table.pages().len() as u64 <= u64::from(maps.sizes.pages);
            if self.bytes + bytes <= self.budget
                && pages_fit
                && let Some(base) = self.allocate(slots)
            {
                break base;
            }
            if !self.evict_one(maps, metrics) {
                metrics.unwind_table_errors.inc();
                return;
            }
        };
        let mut rows = Vec::with_capacity(slots as usize);
        rows.push(Row::command(0, CfaType::End));
        rows.extend_from_slice(table.rows());
        if !maps.write_rows(base, &rows) {
            self.release(base, slots);
            return;
        }
        let mut pages = Vec::with_capacity(table.pages().len());
        for &(page, value) in table.pages() {
            let key = PageKey {
                file_id: file.0,
                page,
            };
            let value = PageValue {
                first: value.first + base + 1,
                count: value.count,
            };
            if let Err(error) = maps.pages.insert(key, value, 0) {
                tracing::debug!(%error, "Could not add an unwind page.");
                break;
            }
            pages.push(page);
        }
        let loaded = Loaded {
            base,
            slots,
            pages,
            unsupported: table.stats().unsupported_rows,
            last_seen: now,
        };
        self.bytes += loaded.bytes();
        metrics.unwind_tables_loaded.inc();
        metrics.unwind_unsupported_rows.inc_by(loaded.unsupported);
        metrics.unwind_table_bytes.set(self.bytes as i64);
        tracing::debug!(pid, rows = slots - 1, bytes, "Unwind table loaded.");
        self.files.insert(file, loaded);
        for (&pid, p) in &mut self.procs {
            for m in &mut p.mappings {
                if m.file == Some(file) && !m.inserted {
                    m.inserted = insert_mapping(maps, &self.proc_root, pid, m, file);
                }
            }
        }
    }

    fn page_entries(&self) -> u64 {
        self.files.values().map(|f| f.pages.len() as u64).sum()
    }

    /// Evicts the least recently seen table; false when there is none.
    fn evict_one(&mut self, maps: &mut UnwindMaps, metrics: &Metrics) -> bool {
        let Some((&file, _)) = self.files.iter().min_by_key(|(_, f)| f.last_seen) else {
            return false;
        };
        self.unload(maps, file);
        metrics.unwind_tables_evicted.inc();
        true
    }

    fn unload(&mut self, maps: &mut UnwindMaps, file: FileId) {
        let Some(f) = self.files.remove(&file) else {
            return;
        };
        for &page in &f.pages {
            let _ = maps.pages.remove(&PageKey {
                file_id: file.0,
                page,
            });
        }
        self.bytes -= f.bytes();
        self.release(f.base, f.slots);
        // Processes that map the file fall back to frame pointers there (no page entry) until
        // their next rescan (at most RESCAN_INTERVAL later) reloads it.
    }

    /// Forgets a process that exited: its trie entries and its map entry.
    pub(super) fn forget(&mut self, maps: &mut UnwindMaps, pid: u32) {
        let _ = maps.procs.remove(&pid);
        if let Some(p) = self.procs.remove(&pid) {
            for m in p.mappings.iter().filter(|m| m.inserted) {
                remove_mapping(maps, pid, m);
            }
        }
    }

    /// First-fit allocation of `n` slots.
    fn allocate(&mut self, n: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, len)| len >= n)?;
        let (start, len) = self.free[i];
        if len == n {
            self.free.remove(i);
        } else {
            self.free[i] = (start + n, len - n);
        }
        Some(start)
    }

    fn release(&mut self, start: u32, n: u32) {
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, n));
        // Merge with the neighbours.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

/// Largest file whose unwind table is built (a regular file only, see
/// [`pyro_core::rootfs::open_mapped`]).
const MAX_MAPPED_FILE: u64 = 4 << 30;

/// Maps the file behind `pid`'s mapping at `start..end` (through `map_files`, which works for
/// other mount namespaces and deleted files, and never resolves a path inside the process).
fn open_mapped(
    proc_root: &Path,
    pid: u32,
    start: u64,
    end: u64,
) -> std::io::Result<(memmap2::Mmap, std::fs::File)> {
    let file = pyro_core::rootfs::open_mapped(proc_root, pid, start, end, MAX_MAPPED_FILE)
        .map_err(std::io::Error::other)?;
    // SAFETY: the file is mapped read-only and only parsed; a file truncated while mapped can
    // raise SIGBUS, the same risk every ELF reader that maps files (perf, addr2line) takes.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok((map, file))
}

/// Adds `pid`'s mapping `m` of `file` to the trie; false when it could not.
fn insert_mapping(
    maps: &mut UnwindMaps,
    proc_root: &Path,
    pid: u32,
    m: &ProcMapping,
    file: FileId,
) -> bool {
    let Some(bias) = open_mapped(proc_root, pid, m.start, m.end)
        .ok()
        .and_then(|(map, _)| pyro_unwind::load_bias(&map, m.start, m.offset))
    else {
        return false;
    };
    let value = Mapping {
        file_id: file.0,
        bias,
        begin: m.start,
        end: m.end,
        kind: MappingKind::Table as u32,
        pad: 0,
    };
    for (addr, len) in lpm_prefixes(m.start, m.end) {
        let key = UnwindMaps::mapping_key(pid, addr, len);
        if let Err(error) = maps.mappings.insert(&key, value, 0) {
            tracing::debug!(pid, %error, "Could not add a mapping to the unwinder's trie.");
            remove_mapping(maps, pid, m);
            return false;
        }
    }
    true
}

fn remove_mapping(maps: &mut UnwindMaps, pid: u32, m: &ProcMapping) {
    if m.file.is_none() {
        return;
    }
    for (addr, len) in lpm_prefixes(m.start, m.end) {
        let _ = maps
            .mappings
            .remove(&UnwindMaps::mapping_key(pid, addr, len));
    }
}

const _: () = assert!(MAPPING_KEY_FIXED_BITS == 64);
