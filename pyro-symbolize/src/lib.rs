//! Native symbolization for pyro: turns the instruction addresses of eBPF stack samples into
//! function names.
//!
//! It sits between the sampler (`pyro-ebpf`, which reads raw user and kernel stacks from the
//! kernel) and the profile builder: for each sample the collector calls
//! [`Symbolizer::symbolize_user`] with the process id and the user addresses, and
//! [`Symbolizer::symbolize_kernel`] with the kernel addresses, and gets one [`Frame`] per
//! address. User addresses are mapped through the process's `/proc/PID/maps` to an offset in the
//! mapped ELF file, then through that file's `PT_LOAD` segments to an ELF virtual address looked
//! up in its `.symtab`/`.dynsym` ([`ElfSymbols`]). A mapped file is opened through
//! `/proc/PID/map_files/<start>-<end>` (the very file the process runs), else through the
//! process's root; every path inside a process (mapped files, debug files, perf maps) is
//! resolved with [`pyro_core::rootfs`], so a container's absolute symlinks and `..` stay inside
//! the container and cannot make the symbolizer read host files. Each file read has a size cap
//! ([`SymbolizerConfig::max_elf_file_size`] and the other `max_*` settings).
//! Kernel addresses are looked up in `/proc/kallsyms` ([`KernelSymbols`]).
//!
//! With [`SymbolizerConfig::debug_info`] on (the default), each user frame also carries its
//! source lines from DWARF ([`Frame::lines`]): the innermost inlined function first, then each
//! caller it was inlined into with the line of the call, the function holding the code last,
//! each with its file and declaration line ([`SourceFrame`]), read through `addr2line`
//! ([`DebugInfo`]). DWARF is loaded on first use and shared per file (by `(dev, inode)` of the
//! file holding it, so all processes mapping one library share one copy) in a cache weighed by
//! bytes against [`SymbolizerConfig::debug_info_memory_limit`].
//!
//! Stripped binaries get their symbols and DWARF from a separate debug file, looked up as gdb
//! does, inside the process's root first, then in the host's `/usr/lib/debug`: by GNU build id
//! (`/usr/lib/debug/.build-id/ab/cdef….debug`), then by `.gnu_debuglink` name (inside the
//! process's root: the binary's directory, its `.debug/`, `/usr/lib/debug/<directory>`; on the
//! host: `/usr/lib/debug/<directory>`; the CRC32 must match, mismatches are counted in
//! [`Symbolizer::debuglink_crc_mismatches`]). Without a debug file, MiniDebugInfo
//! (`.gnu_debugdata`, xz) gives names. The vDSO is read from `/proc/PID/mem`. Not read: Go's
//! `.gopclntab` (stripped Go binaries show their module name), debuginfod.
//!
//! Addresses in anonymous executable memory (JIT code) are named from the process's perf map,
//! `/tmp/perf-<pid>.map` read through `/proc/PID/root` with the pid of the process's own pid
//! namespace, re-read when it changed size (module [`JIT_MODULE`]).
//!
//! Caches follow Alloy's `pyroscope.ebpf` knobs: pid → process state (`pid_cache_size`), GNU/Go
//! build id → symbol table (`build_id_cache_size`), file `(dev, inode)` → symbol table
//! (`same_file_cache_size`). Names are demangled per [`Demangle`] once per symbol and stored.
//! Addresses that cannot be resolved become the mapped file's basename, or `[unknown]`; no
//! input panics.
//!
//! ```no_run
//! use pyro_symbolize::{Symbolizer, SymbolizerConfig};
//!
//! fn work() {}
//!
//! let symbolizer = Symbolizer::new(SymbolizerConfig::default());
//! let pid = std::process::id();
//! let addr = work as usize as u64;
//! for frame in symbolizer.symbolize_user(pid, &[addr]) {
//!     println!("{} ({})", frame.name, frame.module);
//! }
//! ```
#![deny(missing_docs)]

mod demangle;
mod dwarf;
mod elf;
mod kernel;
mod maps;
mod perfmap;
mod process;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use demangle::{Demangle, ParseDemangleError, demangle};
pub use dwarf::{DebugInfo, DwarfError, SourceFrame};
pub use elf::{ElfError, ElfSymbols};
pub use kernel::{KERNEL_MODULE, KernelError, KernelSymbols};

use process::{ProcessState, Tables};

/// The name (and module) of frames that cannot be attributed to any file.
pub const UNKNOWN: &str = "[unknown]";

/// The module of frames in anonymous executable memory named by the process's perf map
/// (`/tmp/perf-<pid>.map`, written by JIT runtimes such as `node --perf-basic-prof`).
pub const JIT_MODULE: &str = "[jit]";

/// Symbolizer settings, named and defaulted like Alloy's `pyroscope.ebpf` arguments; plain serde
/// data (unknown fields are refused by name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SymbolizerConfig {
    /// Processes whose symbol state is kept (`pid_cache_size`, 32).
    pub pid_cache_size: usize,
    /// Symbol tables kept by build id (`build_id_cache_size`, 64).
    pub build_id_cache_size: usize,
    /// Symbol tables kept by file `(dev, inode)` (`same_file_cache_size`, 8).
    pub same_file_cache_size: usize,
    /// Demangling mode (`demangle`, none).
    pub demangle: Demangle,
    /// Where procfs is mounted (`/proc`); tests point it elsewhere.
    pub proc_root: PathBuf,
    /// pyro-only (no Alloy argument): read DWARF for file, line and inlined functions of each
    /// frame ([`Frame::lines`]) when the binary or its debug file has it (true).
    pub debug_info: bool,
    /// pyro-only: bytes of DWARF kept loaded across all files (256 MiB), counting section
    /// bytes times an allowance for what is parsed from them; least recently used files are
    /// dropped first, and a single file that cannot fit is not loaded (counted in
    /// [`Symbolizer::debug_info_errors`]).
    pub debug_info_memory_limit: u64,
    /// pyro-only: largest ELF file of a mapping opened for its symbols (4 GiB); a bigger file
    /// is refused (its frames show the module name) and logged with the file and the cap.
    pub max_elf_file_size: u64,
    /// pyro-only: largest separate debug file (by build id or `.gnu_debuglink`) opened, CRC-
    /// checked and read (4 GiB); bigger ones are skipped.
    pub max_debug_file_size: u64,
    /// pyro-only: bytes of a JIT perf map (`/tmp/perf-<pid>.map`) read (32 MiB); the rest of
    /// a bigger file is ignored and the read counted in [`Symbolizer::perf_maps_truncated`].
    pub max_perf_map_size: u64,
    /// pyro-only: largest MiniDebugInfo (`.gnu_debugdata`) once decompressed (128 MiB); the
    /// compressed section is refused above 16 MiB or this cap, whichever is smaller.
    pub max_minidebuginfo_size: u64,
}

impl Default for SymbolizerConfig {
    fn default() -> Self {
        Self {
            pid_cache_size: 32,
            build_id_cache_size: 64,
            same_file_cache_size: 8,
            demangle: Demangle::None,
            proc_root: PathBuf::from("/proc"),
            debug_info: true,
            debug_info_memory_limit: 256 << 20,
            max_elf_file_size: 4 << 30,
            max_debug_file_size: 4 << 30,
            max_perf_map_size: 32 << 20,
            max_minidebuginfo_size: 128 << 20,
        }
    }
}

/// One symbolized address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Function name (demangled per the configured mode); when unresolved, the module name or
    /// [`UNKNOWN`].
    pub name: Arc<str>,
    /// Basename of the mapped file (`libc.so.6`, `[vdso]`), [`KERNEL_MODULE`] or a kernel
    /// module name for kernel frames, or [`UNKNOWN`].
    pub module: Arc<str>,
    /// Whether `name` is a function name from a symbol table.
    pub resolved: bool,
    /// For user frames in a mapped ELF file: the address as an ELF virtual address of that file
    /// (the same in every process mapping it); 0 otherwise.
    pub address: u64,
    /// The mapped file, for user frames in one.
    pub file: Option<Arc<FileInfo>>,
    /// Source lines from DWARF at the address: the innermost inlined function first, the
    /// function holding the code last. Empty when there is no debug info (or
    /// [`SymbolizerConfig::debug_info`] is off).
    pub lines: Arc<[SourceFrame]>,
}

/// The ELF file a user frame's address is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileInfo {
    /// The path as `/proc/PID/maps` shows it (`/usr/lib/x86_64-linux-gnu/libc.so.6`, `[vdso]`).
    pub path: Arc<str>,
    /// GNU build id in lower-case hex, empty when the file has none.
    pub build_id: Arc<str>,
    /// Whether DWARF line info was found for the file (in it or in a separate debug file).
    pub has_debug_info: bool,
}

impl Frame {
    fn unknown(unknown: &Arc<str>) -> Self {
        Self::named(unknown.clone(), unknown.clone(), false)
    }

    /// A frame with a name and module only.
    fn named(name: Arc<str>, module: Arc<str>, resolved: bool) -> Self {
        Self {
            name,
            module,
            resolved,
            address: 0,
            file: None,
            lines: Arc::from(Vec::new()),
        }
    }
}

/// Resolves user and kernel addresses to [`Frame`]s, with bounded caches inside. Cheap to share
/// between threads (`Send + Sync`); methods take `&self`.
pub struct Symbolizer {
    config: SymbolizerConfig,
    pids: moka::sync::Cache<u32, Arc<ProcessState>>,
    by_build_id: moka::sync::Cache<elf::BuildId, Arc<ElfSymbols>>,
    by_file: moka::sync::Cache<(u64, u64), Arc<ElfSymbols>>,
    kernel: RwLock<Option<Arc<KernelSymbols>>>,
    dwarf: dwarf::DwarfCache,
    stats: process::Stats,
    unknown: Arc<str>,
    kernel_unknown: Arc<str>,
    jit_module: Arc<str>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("config", &self.config)
            .field("pids", &self.pids.entry_count())
            .field("by_build_id", &self.by_build_id.entry_count())
            .field("by_file", &self.by_file.entry_count())
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// A symbolizer with empty caches; nothing is read until the first lookup.
    pub fn new(config: SymbolizerConfig) -> Self {
        let cap = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            pids: moka::sync::Cache::new(cap(config.pid_cache_size)),
            by_build_id: moka::sync::Cache::new(cap(config.build_id_cache_size)),
            by_file: moka::sync::Cache::new(cap(config.same_file_cache_size)),
            kernel: RwLock::new(None),
            dwarf: dwarf::DwarfCache::new(config.debug_info_memory_limit),
            stats: process::Stats::default(),
            unknown: Arc::from(UNKNOWN),
            kernel_unknown: Arc::from(KERNEL_MODULE),
            jit_module: Arc::from(JIT_MODULE),
            config,
        }
    }

    /// The configuration this symbolizer was built with.
    pub fn config(&self) -> &SymbolizerConfig {
        &self.config
    }

    /// Symbolizes user-space addresses of process `pid`: one frame per address, same order.
    ///
    /// Addresses are used as given; for return addresses of non-leaf frames callers usually pass
    /// `addr - 1` so that a call at the very end of a function is attributed to it.
    pub fn symbolize_user(&self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let state = self.pids.get_with(pid, || {
            Arc::new(ProcessState::new(pid, &self.config.proc_root))
        });
        let tables = Tables {
            by_build_id: &self.by_build_id,
            by_file: &self.by_file,
            demangle: self.config.demangle,
            unknown: &self.unknown,
            dwarf: self.config.debug_info.then_some(&self.dwarf),
            stats: &self.stats,
            jit_module: &self.jit_module,
            config: &self.config,
        };
        state.symbolize(addrs, &tables)
    }

    /// Symbolizes kernel addresses through `<proc_root>/kallsyms` (read on first use, see
    /// [`refresh_kernel_symbols`](Self::refresh_kernel_symbols)). Unresolved addresses become
    /// frames named and moduled [`KERNEL_MODULE`].
    pub fn symbolize_kernel(&self, addrs: &[u64]) -> Vec<Frame> {
        let table = self.kernel_symbols();
        addrs
            .iter()
            .map(|&addr| match table.lookup(addr) {
                Some((name, module)) => Frame::named(name.clone(), module.clone(), true),
                None => Frame::named(
                    self.kernel_unknown.clone(),
                    self.kernel_unknown.clone(),
                    false,
                ),
            })
            .collect()
    }

    /// Files whose DWARF could not be used (corrupt, truncated, over
    /// [`SymbolizerConfig::debug_info_memory_limit`]); each is tried once while cached.
    pub fn debug_info_errors(&self) -> u64 {
        self.dwarf.errors()
    }

    /// Debug files named by a binary's `.gnu_debuglink` that were found but not used because
    /// their CRC32 did not match the link's.
    pub fn debuglink_crc_mismatches(&self) -> u64 {
        self.stats
            .debuglink_crc_mismatches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// MiniDebugInfo (`.gnu_debugdata`) sections that could not be used (corrupt xz, over the
    /// size caps, not ELF inside).
    pub fn minidebuginfo_errors(&self) -> u64 {
        self.stats
            .minidebuginfo_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lines of perf maps (`/tmp/perf-<pid>.map`) that were not `START SIZE name`, skipped.
    pub fn perf_map_garbage_lines(&self) -> u64 {
        self.stats
            .perf_map_garbage_lines
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Perf map reads cut at [`SymbolizerConfig::max_perf_map_size`].
    pub fn perf_maps_truncated(&self) -> u64 {
        self.stats
            .perf_maps_truncated
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of DWARF currently loaded (weighed as for the memory limit).
    pub fn debug_info_bytes(&self) -> u64 {
        self.dwarf.weighted_bytes()
    }

    /// Re-reads `kallsyms` (after modules were loaded or unloaded).
    pub fn refresh_kernel_symbols(&self) {
        let table = Arc::new(self.load_kernel());
        *self.kernel.write().unwrap_or_else(|e| e.into_inner()) = Some(table);
    }

    /// Forgets the state of an exited process (its mappings; the symbol tables stay cached by
    /// build id and file).
    pub fn process_exited(&self, pid: u32) {
        self.pids.invalidate(&pid);
    }

    fn kernel_symbols(&self) -> Arc<KernelSymbols> {
        if let Some(t) = &*self.kernel.read().unwrap_or_else(|e| e.into_inner()) {
            return t.clone();
        }
        let mut slot = self.kernel.write().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| Arc::new(self.load_kernel()))
            .clone()
    }

    fn load_kernel(&self) -> KernelSymbols {
        KernelSymbols::load(self.config.proc_root.join("kallsyms")).unwrap_or_else(|error| {
            tracing::warn!(%error, "kernel frames stay unresolved");
            KernelSymbols::empty()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Symbolizer>();
        check::<ElfSymbols>();
        check::<KernelSymbols>();
    }

    #[test]
    fn defaults_match_alloy() {
        let c = SymbolizerConfig::default();
        assert_eq!(
            (
                c.pid_cache_size,
                c.build_id_cache_size,
                c.same_file_cache_size
            ),
            (32, 64, 8)
        );
        assert_eq!(c.demangle, Demangle::None);
        assert_eq!(c.proc_root, PathBuf::from("/proc"));
    }
}
