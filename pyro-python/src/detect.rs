//! Finding CPython in a process and computing its [`PyProcConfig`]: which file holds the
//! interpreter (a mapped `libpython3.X*.so`, else a `python3.X` executable), its exact version,
//! the addresses the walker needs (load bias applied) and how to reach a thread's
//! `PyThreadState` from the thread pointer.
//!
//! # Thread state: the strategy
//!
//! The walker needs the `PyThreadState` of the thread that was on the CPU: the state the thread
//! is *bound* to (`PyGILState_GetThisThreadState`), which it keeps while it runs native code
//! with the GIL released. Like pyperf (the legacy Pyroscope engine) we emulate
//! `pthread_getspecific` on CPython's own thread-state key up to 3.14: the key is
//! `_PyRuntime.gilstate.autoTSSkey` (3.8–3.11) or `_PyRuntime.autoTSSkey` (3.12–3.14), and for
//! glibc the value of key `k` is
//! `struct pthread.specific_1stblock[k].data`, at a fixed offset from the thread pointer
//! (`fsbase` on x86_64, where `pthread_self()` is the thread pointer). It works the same for
//! every version in the table, gives the thread's own state whether or not it holds the GIL
//! (unlike `gilstate.tstate_current`, which names the GIL holder), and needs no disassembly.
//! The OpenTelemetry profiler finds the same key by disassembling `PyGILState_GetThisThreadState`
//! and, from 3.13, reads the static TLS variable `_Py_tss_tstate` instead. That variable holds
//! the *attached* thread state, which CPython clears (`current_fast_clear`) whenever the thread
//! releases the GIL, so a thread hashing or compressing without the GIL would lose its Python
//! stack; the key (bound state) is still set in 3.13 and 3.14, so the key strategy covers
//! 3.8–3.14 here.
//!
//! 3.15 removed the key: the bound state is the static TLS variable `_Py_tss_gilstate`, at a
//! fixed offset from the thread pointer in every thread ([`PyProcConfig::tstate_tls_offset`]).
//! The offset is read from the code of `PyGILState_GetThisThreadState`, which is exported and
//! is nothing but that load: `mov %fs:OFFSET, %rax; ret` in an executable (local-exec TLS), or
//! `mov GOT(%rip), %rax; mov %fs:(%rax), %rax; ret` in a shared libpython (initial-exec: the
//! offset is the GOT slot's value in the process). It is then confirmed on the live process:
//! some thread of the interpreter must hold its own state at that offset.
//!
//! glibc's offset of `specific_1stblock` varies between glibc builds, so it is not taken from a
//! table: it is **calibrated** on the live process. `PyThreadState.thread_id` holds
//! `pthread_self()`, the thread pointer; the thread's `struct pthread` is scanned for the slot
//! `{seq (odd = key in use), data = that PyThreadState}` at `16 * key` from the start of the
//! block. Finding it also confirms the runtime offsets (`interpreters.head`, `threads.head`,
//! `thread_id`, `autoTSSkey`) on this exact build. Keys of 32 and above (second-level blocks)
//! and musl are reported as unsupported.

use std::fmt;
use std::path::PathBuf;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use crate::layout::{self, Libc, PyOffsets, PyProcConfig};
use crate::mem::{MemError, Memory, ProcMem};

/// Threads followed in an interpreter's thread list (user space only).
pub const MAX_THREADS: usize = 4096;

/// Bytes of `struct pthread` scanned when calibrating the pthread key block (glibc's
/// `struct pthread` is about 2.3 KiB on x86_64).
const TCB_SCAN_BYTES: usize = 4096;

/// glibc keys kept in `struct pthread` itself (`PTHREAD_KEY_2NDLEVEL_SIZE`).
const GLIBC_FIRST_BLOCK_KEYS: u32 = 32;

/// A CPython version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyVersion {
    /// Major (3).
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Patch level, when known (from `Py_Version`, or the `PY_VERSION` string before 3.11).
    pub patch: Option<u8>,
}

impl PyVersion {
    /// `PY_VERSION_HEX`-style number without release level: `major << 24 | minor << 16 |
    /// patch << 8`.
    pub fn hex(&self) -> u32 {
        (u32::from(self.major) << 24)
            | (u32::from(self.minor) << 16)
            | (u32::from(self.patch.unwrap_or(0)) << 8)
    }

    /// Whether the offset table has this version.
    pub fn is_supported(&self) -> bool {
        layout::offsets_for(self.major, self.minor).is_some()
    }
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "{}.{}.{}", self.major, self.minor, p),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

/// Errors of CPython detection.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// `/proc/PID/maps` or `/proc/PID/exe` could not be read.
    #[error("read /proc/{pid}/{what}: {reason}")]
    Proc {
        /// The process.
        pid: u32,
        /// `maps` or `exe`.
        what: &'static str,
        /// The cause.
        reason: String,
    },
    /// The interpreter's ELF file could not be opened or parsed.
    #[error("pid {pid}: ELF {path}: {reason}")]
    Elf {
        /// The process.
        pid: u32,
        /// The file (as seen from the host).
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// A symbol the walker needs is missing from the interpreter's symbol tables.
    #[error("pid {pid}: {path} has no symbol {symbol}")]
    MissingSymbol {
        /// The process.
        pid: u32,
        /// The file.
        path: PathBuf,
        /// The symbol.
        symbol: &'static str,
    },
    /// CPython, but not a version of the offset table (the collector logs it once, counts it
    /// and keeps native stacks for the process).
    #[error("pid {pid}: unsupported CPython version {version}{}", if *.free_threaded { " (free-threaded build)" } else { "" })]
    UnsupportedVersion {
        /// The process.
        pid: u32,
        /// The version found.
        version: PyVersion,
        /// A free-threaded (`t`) build, whose object layout differs.
        free_threaded: bool,
    },
    /// The interpreter is not initialised yet (no interpreter, no thread state, or the thread
    /// state key is not created): retry later.
    #[error("pid {pid}: interpreter not ready: {reason}")]
    NotReady {
        /// The process.
        pid: u32,
        /// What is missing.
        reason: &'static str,
    },
    /// The thread-state key cannot be followed from the thread pointer in this process.
    #[error("pid {pid}: thread state lookup unsupported: {reason}")]
    Tls {
        /// The process.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// Reading the process's memory failed.
    #[error(transparent)]
    Memory(#[from] MemError),
}

/// The file holding the interpreter in a process, found from its memory map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonModule {
    /// Path as mapped (in the process's mount namespace).
    pub path: PathBuf,
    /// Whether it is a `libpython` shared library (else the executable).
    pub is_library: bool,
    /// Version from the file name (no patch level).
    pub name_version: PyVersion,
    /// Whether the name marks a free-threaded build (`python3.13t`).
    pub free_threaded: bool,
    /// Lowest start address of the file's mappings at file offset 0.
    pub base: u64,
    /// End address of that mapping (with [`PythonModule::base`], its name in
    /// `/proc/PID/map_files`).
    pub base_end: u64,
}

/// A detected CPython process, ready for the walker.
#[derive(Debug, Clone)]
pub struct PythonProcess {
    /// The process.
    pub pid: u32,
    /// The exact version.
    pub version: PyVersion,
    /// The file holding the interpreter.
    pub module: PythonModule,
    /// Load bias of that file (address in the process = address in the file + bias).
    pub bias: u64,
    /// The thread-state pthread key, as read at detection (`None` from 3.15, which has none).
    pub tss_key: Option<u32>,
    /// What the BPF walker needs (and the reference walker uses).
    pub config: PyProcConfig,
}

/// Parses `python3.11`, `libpython3.11.so.1.0`, `python3.13t` …: `(major, minor, free-threaded)`.
pub fn parse_python_name(file_name: &str) -> Option<(u8, u8, bool)> {
    let rest = file_name
        .strip_prefix("libpython")
        .or_else(|| file_name.strip_prefix("python"))?;
    let (major, rest) = rest.split_once('.')?;
    let major: u8 = major.parse().ok()?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let minor: u8 = rest[..digits].parse().ok()?;
    let tail = &rest[digits..];
    // ABI flags (`d`, `t`, `m`) then nothing or `.so…`.
    let flags = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
    let (abi, after) = tail.split_at(flags);
    if !(after.is_empty() || after.starts_with(".so")) || abi.len() > 2 {
        return None;
    }
    Some((major, minor, abi.contains('t')))
}

/// Finds the file holding the interpreter: a mapped `libpython3.X*.so*`, else the executable
/// when it is named `python3.X*`. `Ok(None)` for a process that is not CPython.
pub fn find_python_module(pid: u32) -> Result<Option<PythonModule>, DetectError> {
    let proc_err = |what: &'static str, reason: String| DetectError::Proc { pid, what, reason };
    let process =
        procfs::process::Process::new(pid as i32).map_err(|e| proc_err("maps", e.to_string()))?;
    let maps = process
        .maps()
        .map_err(|e| proc_err("maps", e.to_string()))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    for m in maps.iter() {
        if let procfs::process::MMapPath::Path(p) = &m.pathname {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("libpython") && !candidates.iter().any(|(c, _)| c == p) {
                candidates.push((p.clone(), true));
            }
        }
    }
    if let Some(exe) = exe {
        candidates.push((exe, false));
    }
    for (path, is_library) in candidates {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some((major, minor, free_threaded)) = parse_python_name(name) else {
            continue;
        };
        let base = maps
            .iter()
            .filter(|m| m.offset == 0)
            .filter(|m| matches!(&m.pathname, procfs::process::MMapPath::Path(p) if *p == path))
            .map(|m| m.address)
            .min();
        let Some((base, base_end)) = base else {
            continue;
        };
        return Ok(Some(PythonModule {
            path,
            is_library,
            name_version: PyVersion {
                major,
                minor,
                patch: None,
            },
            free_threaded,
            base,
            base_end,
        }));
    }
    Ok(None)
}

/// Symbols of the interpreter file, as file addresses.
#[derive(Debug, Default, Clone, Copy)]
struct Symbols {
    runtime: Option<u64>,
    py_version: Option<u64>,
    code_type: Option<u64>,
    unicode_type: Option<u64>,
    gilstate_fn: Option<u64>,
}

impl Symbols {
    fn note<'d, S: ObjectSymbol<'d>>(&mut self, sym: &S) {
        let slot = match sym.name_bytes() {
            Ok(b"_PyRuntime") => &mut self.runtime,
            Ok(b"Py_Version") => &mut self.py_version,
            Ok(b"PyCode_Type") => &mut self.code_type,
            Ok(b"PyUnicode_Type") => &mut self.unicode_type,
            Ok(b"PyGILState_GetThisThreadState") => &mut self.gilstate_fn,
            _ => return,
        };
        if slot.is_none() && sym.address() != 0 {
            *slot = Some(sym.address());
        }
    }

    /// Everything the version has was found (`Py_Version` exists from 3.11).
    fn complete(&self, minor: u8) -> bool {
        self.runtime.is_some()
            && self.code_type.is_some()
            && self.unicode_type.is_some()
            && (minor < 11 || self.py_version.is_some())
            && (minor < 15 || self.gilstate_fn.is_some())
    }
}

struct ElfInfo {
    symbols: Symbols,
    /// Lowest page-aligned virtual address of the segments mapped from file offset 0.
    first_vaddr: u64,
    /// `PY_VERSION` patch level found in `.rodata` (only looked for without `Py_Version`).
    rodata_patch: Option<u8>,
    /// The first bytes of `PyGILState_GetThisThreadState` (3.15+).
    gilstate_code: Option<Vec<u8>>,
}

/// Largest interpreter file read (a libpython with full debug info is tens of MB).
const MAX_INTERPRETER_FILE: u64 = 1 << 30;

/// Opens the interpreter file the process maps: the mapping itself through
/// `/proc/PID/map_files` (works across mount namespaces and chroots, needs `CAP_SYS_ADMIN`),
/// else its path resolved inside the process's root with [`pyro_core::rootfs`] (a container's
/// absolute symlinks stay inside the container, never reaching the host's files).
fn open_interpreter(pid: u32, module: &PythonModule) -> Result<std::fs::File, String> {
    use pyro_core::rootfs::{RootDir, RootfsError, open_mapped};
    match open_mapped(
        "/proc",
        pid,
        module.base,
        module.base_end,
        MAX_INTERPRETER_FILE,
    ) {
        Ok(file) => return Ok(file),
        Err(e @ RootfsError::TooLarge { .. }) => return Err(e.to_string()),
        Err(e) => tracing::trace!(pid, error = %e, "map_files not usable, opening the path"),
    }
    RootDir::of_process("/proc", pid)
        .and_then(|root| root.open_file(&module.path, MAX_INTERPRETER_FILE))
        .map_err(|e| e.to_string())
}

fn read_elf(pid: u32, module: &PythonModule, minor: u8) -> Result<ElfInfo, DetectError> {
    let elf_err = |reason: String| DetectError::Elf {
        pid,
        path: module.path.clone(),
        reason,
    };
    let file = open_interpreter(pid, module).map_err(elf_err)?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|e| elf_err(e.to_string()))?;
    let mut symbols = Symbols::default();
    // CPython exports all four; `.symtab` (large in debug builds) only when `.dynsym` lacks one.
    for sym in elf.dynamic_symbols() {
        symbols.note(&sym);
    }
    if !symbols.complete(minor) {
        for sym in elf.symbols() {
            symbols.note(&sym);
        }
    }
    let first_vaddr = elf
        .segments()
        .filter(|s| s.file_range().0 == 0)
        .map(|s| s.address())
        .min()
        .or_else(|| elf.segments().map(|s| s.address()).min())
        .unwrap_or(0)
        & !0xfff;
    let rodata_patch = if symbols.py_version.is_none() {
        elf.section_by_name(".rodata")
            .and_then(|s| s.data().ok())
            .and_then(|d| find_version_string(d, minor))
    } else {
        None
    };
    let gilstate_code = symbols.gilstate_fn.and_then(|addr| {
        let section = elf
            .sections()
            .find(|s| (s.address()..s.address() + s.size()).contains(&addr))?;
        let data = section.data().ok()?;
        let start = usize::try_from(addr - section.address()).ok()?;
        data.get(start..)
            .map(|d| d[..d.len().min(GILSTATE_CODE_BYTES)].to_vec())
    });
    Ok(ElfInfo {
        symbols,
        first_vaddr,
        rodata_patch,
        gilstate_code,
    })
}

/// Finds the `PY_VERSION` literal (`"3.X.N"`, NUL-terminated, possibly with a `+` or release
/// suffix) in `.rodata` and returns `N`. The linker may have merged the literal into the tail of
/// a longer string (the install prefix, `…/versions/3.8.18`), so it need not start after a NUL.
fn find_version_string(data: &[u8], minor: u8) -> Option<u8> {
    let needle = format!("3.{minor}.");
    let needle = needle.as_bytes();
    let mut from = 0;
    while let Some(pos) = data[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
    {
        let before = pos.checked_sub(1).map(|i| data[i]);
        let rest = &data[pos + needle.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let end = rest.get(digits).copied();
        if !before.is_some_and(|b| b.is_ascii_digit() || b == b'.')
            && (1..=3).contains(&digits)
            && matches!(end, Some(0 | b'+' | b'a' | b'b' | b'r'))
            && let Some(n) = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|s| s.parse().ok())
        {
            return Some(n);
        }
        from = pos + 1;
    }
    None
}

/// Detects CPython in `pid`: `Ok(None)` when the process is not CPython, an error when it is
/// but cannot be walked (unsupported version, not initialised yet, …).
pub fn detect(pid: u32) -> Result<Option<PythonProcess>, DetectError> {
    let Some(module) = find_python_module(pid)? else {
        return Ok(None);
    };
    let mem = ProcMem::open(pid)?;
    detect_module(pid, module, &mem).map(Some)
}

/// Detection for a module already found, reading memory through `mem`.
pub fn detect_module(
    pid: u32,
    module: PythonModule,
    mem: &dyn Memory,
) -> Result<PythonProcess, DetectError> {
    let unsupported = |version: PyVersion, free_threaded: bool| DetectError::UnsupportedVersion {
        pid,
        version,
        free_threaded,
    };
    let nv = module.name_version;
    if module.free_threaded {
        return Err(unsupported(nv, true));
    }
    if !nv.is_supported() {
        return Err(unsupported(nv, false));
    }
    let elf = read_elf(pid, &module, nv.minor)?;
    let bias = module.base.wrapping_sub(elf.first_vaddr);
    let missing = |symbol: &'static str| DetectError::MissingSymbol {
        pid,
        path: module.path.clone(),
        symbol,
    };
    let version = match elf.symbols.py_version {
        Some(addr) => {
            let hex = mem.read_u32(addr.wrapping_add(bias))?;
            PyVersion {
                major: (hex >> 24) as u8,
                minor: (hex >> 16) as u8,
                patch: Some((hex >> 8) as u8),
            }
        }
        None => PyVersion {
            patch: elf.rodata_patch,
            ..nv
        },
    };
    let Some(offsets) = layout::offsets_for(version.major, version.minor) else {
        return Err(unsupported(version, false));
    };
    if (version.major, version.minor) != (nv.major, nv.minor) {
        // `Py_Version` disagrees with the file name: trust neither.
        return Err(unsupported(version, false));
    }
    let runtime = elf
        .symbols
        .runtime
        .ok_or_else(|| missing("_PyRuntime"))?
        .wrapping_add(bias);
    let code_type = elf
        .symbols
        .code_type
        .ok_or_else(|| missing("PyCode_Type"))?
        .wrapping_add(bias);
    let unicode_type = elf
        .symbols
        .unicode_type
        .ok_or_else(|| missing("PyUnicode_Type"))?
        .wrapping_add(bias);
    let (tss_key_addr, tss_key, tls_key0_data, tstate_tls_offset) =
        if offsets.runtime_tss_key == layout::NONE {
            let code = elf
                .gilstate_code
                .as_deref()
                .ok_or_else(|| missing("PyGILState_GetThisThreadState"))?;
            let fn_addr = elf
                .symbols
                .gilstate_fn
                .ok_or_else(|| missing("PyGILState_GetThisThreadState"))?
                .wrapping_add(bias);
            let off = static_tls_offset(pid, mem, offsets, runtime, code, fn_addr)?;
            (0, None, 0, off)
        } else {
            let tss_key_addr = runtime.wrapping_add(u64::from(offsets.runtime_tss_key));
            let (key, key0) = calibrate_tls(pid, mem, offsets, runtime, tss_key_addr)?;
            (tss_key_addr, Some(key), key0, 0)
        };
    let config = PyProcConfig {
        runtime_addr: runtime,
        tss_key_addr,
        code_type_addr: code_type,
        unicode_type_addr: unicode_type,
        tls_key0_data,
        tstate_tls_offset,
        version_hex: version.hex(),
        libc: Libc::Glibc as u32,
        offsets: *offsets,
    };
    tracing::debug!(pid, %version, path = %module.path.display(), bias, runtime, ?tss_key, tls_key0_data, tstate_tls_offset = tstate_tls_offset as i64, "detected CPython");
    Ok(PythonProcess {
        pid,
        version,
        module,
        bias,
        tss_key,
        config,
    })
}

/// Reads the thread-state key (`Py_tss_t` at `tss_key_addr`): `Ok(None)` while uninitialised.
pub fn read_tss_key(
    mem: &dyn Memory,
    offsets: &PyOffsets,
    tss_key_addr: u64,
) -> Result<Option<u32>, MemError> {
    let initialized = mem.read_u32(tss_key_addr)?;
    if initialized == 0 {
        return Ok(None);
    }
    mem.read_u32(tss_key_addr.wrapping_add(u64::from(offsets.tss_key)))
        .map(Some)
}

/// The thread states of the main interpreter, in list order (bounded by [`MAX_THREADS`]).
pub fn thread_states(
    mem: &dyn Memory,
    offsets: &PyOffsets,
    runtime: u64,
) -> Result<Vec<u64>, MemError> {
    let interp =
        mem.read_u64(runtime.wrapping_add(u64::from(offsets.runtime_interpreters_head)))?;
    if interp == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut t = mem.read_u64(interp.wrapping_add(u64::from(offsets.interp_threads_head)))?;
    while t != 0 && out.len() < MAX_THREADS && !out.contains(&t) {
        out.push(t);
        t = mem.read_u64(t.wrapping_add(u64::from(offsets.tstate_next)))?;
    }
    Ok(out)
}

/// Finds the thread-state key and glibc's key block offset (see the module docs).
fn calibrate_tls(
    pid: u32,
    mem: &dyn Memory,
    offsets: &PyOffsets,
    runtime: u64,
    tss_key_addr: u64,
) -> Result<(u32, u64), DetectError> {
    let not_ready = |reason| DetectError::NotReady { pid, reason };
    let key = read_tss_key(mem, offsets, tss_key_addr)?
        .ok_or_else(|| not_ready("thread state key not created"))?;
    if key >= GLIBC_FIRST_BLOCK_KEYS {
        return Err(DetectError::Tls {
            pid,
            reason: format!("pthread key {key} is in glibc's second-level blocks"),
        });
    }
    let states = thread_states(mem, offsets, runtime)?;
    if states.is_empty() {
        return Err(not_ready("no thread state"));
    }
    let mut tried = 0;
    for tstate in states {
        let tp = mem.read_u64(tstate.wrapping_add(u64::from(offsets.tstate_thread_id)))?;
        if tp == 0 {
            continue;
        }
        tried += 1;
        if let Some(off) = scan_key_block(mem, tp, tstate, key) {
            return Ok((key, off));
        }
    }
    Err(DetectError::Tls {
        pid,
        reason: format!(
            "no glibc key slot holding the thread state found in {tried} threads (musl, or another libc layout)"
        ),
    })
}

/// Bytes of `PyGILState_GetThisThreadState` decoded (the two forms are 13 and 18 bytes long).
const GILSTATE_CODE_BYTES: usize = 32;

/// How `PyGILState_GetThisThreadState` loads the thread-local `_Py_tss_gilstate` (x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLoad {
    /// `mov %fs:OFFSET, %rax` (local-exec, in an executable): the offset itself.
    ThreadPointer(i32),
    /// `mov DISP(%rip), %rax; mov %fs:(%rax), %rax` (initial-exec, in a shared library): the
    /// offset is the value of the GOT slot at `DISP` from `end` (the end of the first
    /// instruction, relative to the start of the function).
    Got {
        /// `rip`-relative displacement of the GOT slot.
        disp: i32,
        /// Where the displacement counts from, in bytes after the function's start.
        end: u64,
    },
}

/// Decodes the TLS load that starts `PyGILState_GetThisThreadState` (after an optional
/// `endbr64`); `None` for any other code.
pub fn decode_tls_load(code: &[u8]) -> Option<TlsLoad> {
    let start = if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        4
    } else {
        0
    };
    let c = code.get(start..)?;
    let i32_at = |at: usize| -> Option<i32> {
        Some(i32::from_le_bytes(c.get(at..at + 4)?.try_into().ok()?))
    };
    if c.starts_with(&[0x64, 0x48, 0x8b, 0x04, 0x25]) && c.get(9) == Some(&0xc3) {
        return Some(TlsLoad::ThreadPointer(i32_at(5)?));
    }
    if c.starts_with(&[0x48, 0x8b, 0x05]) && c.get(7..12) == Some(&[0x64, 0x48, 0x8b, 0x00, 0xc3]) {
        return Some(TlsLoad::Got {
            disp: i32_at(3)?,
            end: start as u64 + 7,
        });
    }
    None
}

/// The offset from the thread pointer of `_Py_tss_gilstate` (3.15+; see the module docs),
/// confirmed on the live process.
fn static_tls_offset(
    pid: u32,
    mem: &dyn Memory,
    offsets: &PyOffsets,
    runtime: u64,
    code: &[u8],
    fn_addr: u64,
) -> Result<u64, DetectError> {
    let tls_err = |reason: String| DetectError::Tls { pid, reason };
    let off = match decode_tls_load(code) {
        Some(TlsLoad::ThreadPointer(off)) => i64::from(off) as u64,
        Some(TlsLoad::Got { disp, end }) => {
            let slot = fn_addr
                .wrapping_add(end)
                .wrapping_add(i64::from(disp) as u64);
            mem.read_u64(slot)?
        }
        None => {
            return Err(tls_err(format!(
                "PyGILState_GetThisThreadState is not a TLS load this version of pyro reads ({:02x?})",
                &code[..code.len().min(16)]
            )));
        }
    };
    let states = thread_states(mem, offsets, runtime)?;
    if states.is_empty() {
        return Err(DetectError::NotReady {
            pid,
            reason: "no thread state",
        });
    }
    for &tstate in &states {
        let tp = mem.read_u64(tstate.wrapping_add(u64::from(offsets.tstate_thread_id)))?;
        if tp != 0 && mem.read_u64(tp.wrapping_add(off)).ok() == Some(tstate) {
            return Ok(off);
        }
    }
    Err(tls_err(format!(
        "no thread of {} holds its state at thread pointer {:+#x} (_Py_tss_gilstate)",
        states.len(),
        off as i64
    )))
}

/// Scans `struct pthread` at `tp` for `{odd seq, tstate}` at `16 * key` into a key block;
/// returns the offset of key 0's `data` from `tp`.
fn scan_key_block(mem: &dyn Memory, tp: u64, tstate: u64, key: u32) -> Option<u64> {
    let mut buf = vec![0u8; TCB_SCAN_BYTES];
    // The block may end near a page edge: fall back to smaller reads.
    let mut len = TCB_SCAN_BYTES;
    while mem.read(tp, &mut buf[..len]).is_err() {
        len /= 2;
        if len < 1024 {
            return None;
        }
    }
    let word = |o: usize| {
        buf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let skip = 16 * key as usize;
    (8 + skip..len)
        .step_by(8)
        .find(|&o| word(o) == Some(tstate) && word(o - 8).is_some_and(|seq| seq & 1 == 1))
        .map(|o| (o - skip) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_python_name("python3.11"), Some((3, 11, false)));
        assert_eq!(parse_python_name("python3.8"), Some((3, 8, false)));
        assert_eq!(
            parse_python_name("libpython3.11.so.1.0"),
            Some((3, 11, false))
        );
        assert_eq!(
            parse_python_name("libpython3.11d.so.1.0"),
            Some((3, 11, false))
        );
        assert_eq!(parse_python_name("python3.13t"), Some((3, 13, true)));
        assert_eq!(parse_python_name("libpython3.13t.so"), Some((3, 13, true)));
        assert_eq!(parse_python_name("python3"), None);
        assert_eq!(parse_python_name("python3.11-config"), None);
        assert_eq!(parse_python_name("python"), None);
        assert_eq!(parse_python_name("pythonx.y"), None);
        assert_eq!(parse_python_name("libpython3.so"), None);
        assert_eq!(parse_python_name("python3.11.py"), None);
    }

    #[test]
    fn version_string() {
        let data = b"junk\x003.8.18\x00more 3.8.1 no";
        assert_eq!(find_version_string(data, 8), Some(18));
        assert_eq!(
            find_version_string(b"/root/.pyenv/versions/3.8.18\x00", 8),
            Some(18)
        );
        assert_eq!(find_version_string(b"\x0013.8.1\x00", 8), None);
        assert_eq!(find_version_string(b"\x003.9.2+\x00", 9), Some(2));
        assert_eq!(
            find_version_string(b"\x003.9.x\x00\x003.9.7\x00", 9),
            Some(7)
        );
        assert_eq!(find_version_string(b"\x003.10.1\x00", 9), None);
    }

    struct NoMem;
    impl Memory for NoMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            Err(MemError::Read {
                pid: 1,
                addr,
                len: buf.len(),
                source: std::io::Error::from_raw_os_error(5),
            })
        }
    }

    fn module(name: &str) -> PythonModule {
        let (major, minor, free_threaded) = parse_python_name(name).expect("python name");
        PythonModule {
            path: PathBuf::from("/usr/bin").join(name),
            is_library: false,
            name_version: PyVersion {
                major,
                minor,
                patch: None,
            },
            free_threaded,
            base: 0x40_0000,
            base_end: 0x42_5000,
        }
    }

    /// Versions outside the table are a typed result, decided before anything is read.
    #[test]
    fn unsupported_versions() {
        for (name, minor, ft) in [
            ("python3.7", 7, false),
            ("python3.16", 16, false),
            ("libpython3.13t.so.1.0", 13, true),
        ] {
            match detect_module(1, module(name), &NoMem) {
                Err(DetectError::UnsupportedVersion {
                    pid: 1,
                    version,
                    free_threaded,
                }) => {
                    assert_eq!(
                        (version.major, version.minor, free_threaded),
                        (3, minor, ft)
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let e = detect_module(1, module("python3.16"), &NoMem).unwrap_err();
        assert_eq!(e.to_string(), "pid 1: unsupported CPython version 3.16");
        let e = detect_module(1, module("python3.13t"), &NoMem).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pid 1: unsupported CPython version 3.13 (free-threaded build)"
        );
    }

    #[test]
    fn hex_and_display() {
        let v = PyVersion {
            major: 3,
            minor: 11,
            patch: Some(7),
        };
        assert_eq!(v.hex(), 0x030b_0700);
        assert_eq!(v.to_string(), "3.11.7");
        assert!(v.is_supported());
        let old = PyVersion {
            major: 3,
            minor: 7,
            patch: None,
        };
        assert_eq!(old.to_string(), "3.7");
        assert!(!old.is_supported());
    }
}
