//! What the BPF walker needs to read Python frames, as plain `#[repr(C)]` data: the per-version
//! struct offset table ([`PyOffsets`], [`offsets_for`]) and the per-process configuration
//! ([`PyProcConfig`]) that goes into a BPF hash map keyed by pid.
//!
//! It is shared by the kernel side (`bpf-programs/`, which reads [`PyProcConfig`] from the
//! `PY_PROCS` map on every sample of a Python process) and user space (`pyro-python` computes
//! it, `pyro-ebpf` writes it into the map), so there is one definition of each struct.
//!
//! # Sources
//!
//! Every offset is for 64-bit little-endian builds (x86_64, aarch64) of CPython without
//! `Py_TRACE_REFS` and without free threading (`Py_GIL_DISABLED`), which is what distributions
//! and pyenv build. The header each field comes from is noted on the field; the tags are
//! `v3.8.18`, `v3.9.18`, `v3.10.13`, `v3.11.7`, `v3.12.1` and `v3.13.0` of CPython (and Debian's
//! `3.11.2`; Debian's `3.13.18`, `3.14.10` and `3.15.2` for 3.13–3.15, whose rows were taken from
//! the DWARF of their `python3.X-dbg` debug files). The table is one row per minor version: the frame, code and string layouts do not
//! change within a minor; `_PyRuntimeState` and `PyInterpreterState` can (pyperf keeps per-patch
//! rows for them), which is why the user-space detection checks what it reads before trusting it
//! (see `pyro_python::detect`). `tests/offsets_dwarf.rs` checks every row against the DWARF of a debug build.

/// An offset the version does not have.
pub const NONE: u16 = u16::MAX;

/// Python frames read per stack. The walker stops there and marks the stack truncated (the
/// leaf-most frames are kept, as the walk goes from the leaf to the root). 128 = 4 tail calls
/// of 32 frames each in the BPF walker.
pub const MAX_PYTHON_FRAMES: usize = 128;

/// Bytes read of a function name or qualified name (from the start).
pub const MAX_NAME_BYTES: usize = 128;
/// Bytes read of a class name, before 3.11 (from `tp_name`, from the start).
pub const MAX_CLASS_BYTES: usize = 64;
/// Bytes read of a file name, **from the end** so that the base name survives long paths.
pub const MAX_FILE_BYTES: usize = 128;

/// Bits of `PyASCIIObject.state` (`Include/cpython/unicodeobject.h`, all of 3.8–3.15):
/// `interned:2, kind:3, compact:1, ascii:1, ...` from bit 0.
pub const STATE_KIND_SHIFT: u32 = 2;
/// Mask of the `kind` bits after shifting: 1 (UCS-1), 2 (UCS-2) or 4 (UCS-4).
pub const STATE_KIND_MASK: u32 = 0b111;
/// The `compact` bit: the characters follow the object header.
pub const STATE_COMPACT_BIT: u32 = 1 << 5;
/// The `ascii` bit: the characters follow a `PyASCIIObject` header (else a
/// `PyCompactUnicodeObject` header).
pub const STATE_ASCII_BIT: u32 = 1 << 6;

/// The lowest `_PyInterpreterFrame.owner` value of frames that run no Python function of their
/// own and are skipped, from 3.12: the C-stack shim frames pushed at every entry into the eval
/// loop (`FRAME_OWNED_BY_CSTACK`: 3 in 3.12–3.13, 4 in 3.14, gone in 3.15) and the
/// interpreter's base frames (`FRAME_OWNED_BY_INTERPRETER`: 3 in 3.14–3.15)
/// (`Include/internal/pycore_frame.h`; `pycore_interpframe_structs.h` from 3.14). A frame is
/// skipped when `owner >= OWNER_INCOMPLETE`, as CPython's own `_PyFrame_IsIncomplete` does.
pub const OWNER_INCOMPLETE: u8 = 3;

/// Tag bits of a `_PyStackRef` in the default (GIL) build from 3.14 (`Py_TAG_BITS`,
/// `Include/internal/pycore_stackref.h`): `_PyInterpreterFrame.f_executable` is a `_PyStackRef`
/// whose low bits say how the reference is counted; the object pointer is `bits & !3`.
pub const STACKREF_TAG_BITS: u8 = 3;

/// How a version finds and links its frames.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameModel {
    /// 3.8–3.10: `PyThreadState.frame` → `PyFrameObject`, linked by `f_back`.
    FrameObject = 0,
    /// 3.11–3.12: `PyThreadState.cframe` → `_PyCFrame.current_frame` → `_PyInterpreterFrame`,
    /// linked by `previous`.
    CFrame = 1,
    /// 3.13+: `PyThreadState.current_frame` → `_PyInterpreterFrame`, linked by `previous`.
    Direct = 2,
}

/// Struct member offsets of one CPython minor version (bytes; [`NONE`] where the version lacks
/// the member). Plain data: the BPF walker reads it from the per-pid map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyOffsets {
    /// `_PyRuntimeState.gilstate.autoTSSkey` (3.8–3.11) / `.autoTSSkey` (3.12+): the `Py_tss_t`
    /// whose pthread key maps a thread to its `PyThreadState` (`Include/internal/pycore_runtime.h`,
    /// `pycore_pystate.h` in 3.8).
    pub runtime_tss_key: u16,
    /// `_PyRuntimeState.interpreters.head` (`Include/internal/pycore_runtime.h`).
    pub runtime_interpreters_head: u16,
    /// `PyInterpreterState.tstate_head` (3.8–3.10) / `.threads.head` (3.11+)
    /// (`Include/internal/pycore_interp.h`).
    pub interp_threads_head: u16,
    /// `PyThreadState.next` (`Include/cpython/pystate.h`).
    pub tstate_next: u16,
    /// `PyThreadState.thread_id` (`pthread_self()`; `Include/cpython/pystate.h`).
    pub tstate_thread_id: u16,
    /// `PyThreadState.native_thread_id` (3.11+, `gettid()`; `Include/cpython/pystate.h`).
    pub tstate_native_thread_id: u16,
    /// `PyThreadState.frame` (3.8–3.10) / `.cframe` (3.11–3.12) / `.current_frame` (3.13+)
    /// (`Include/cpython/pystate.h`).
    pub tstate_frame: u16,
    /// `_PyCFrame.current_frame` (3.11–3.12, `Include/cpython/pystate.h`).
    pub cframe_current_frame: u16,
    /// `PyFrameObject.f_code` (3.8–3.10, `Include/frameobject.h` / `Include/cpython/frameobject.h`)
    /// / `_PyInterpreterFrame.f_code` (3.11–3.12) / `.f_executable` (3.13+; a tagged
    /// `_PyStackRef` from 3.14, see [`PyOffsets::frame_code_tag_bits`])
    /// (`Include/internal/pycore_frame.h`, `pycore_interpframe_structs.h` from 3.14).
    pub frame_code: u16,
    /// `PyFrameObject.f_back` (3.8–3.10) / `_PyInterpreterFrame.previous` (3.11+).
    pub frame_back: u16,
    /// `_PyInterpreterFrame.owner` (3.11+, a `char`).
    pub frame_owner: u16,
    /// `PyFrameObject.f_localsplus` (3.8–3.10) / `_PyInterpreterFrame.localsplus` (3.11+).
    pub frame_localsplus: u16,
    /// `PyCodeObject.co_filename` (`Include/code.h`, `Include/cpython/code.h` from 3.9).
    pub code_filename: u16,
    /// `PyCodeObject.co_name`.
    pub code_name: u16,
    /// `PyCodeObject.co_qualname` (3.11+).
    pub code_qualname: u16,
    /// `PyCodeObject.co_argcount` (`int`).
    pub code_argcount: u16,
    /// `PyCodeObject.co_varnames` (3.8–3.10) / `.co_localsplusnames` (3.11+): tuple whose first
    /// item names the first argument (`self` / `cls`).
    pub code_varnames: u16,
    /// `PyCodeObject.co_firstlineno` (`int`).
    pub code_firstlineno: u16,
    /// `PyASCIIObject.length` (`Py_ssize_t`, characters; `Include/cpython/unicodeobject.h`).
    pub unicode_length: u16,
    /// `PyASCIIObject.state` (the bit-field word, see `STATE_*`).
    pub unicode_state: u16,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub unicode_ascii_data: u16,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's characters start.
    pub unicode_compact_data: u16,
    /// `PyObject.ob_type` (`Include/object.h`).
    pub object_type: u16,
    /// `PyTypeObject.tp_name` (`const char *`, `Include/cpython/object.h`).
    pub type_name: u16,
    /// `PyTupleObject.ob_item` (`Include/cpython/tupleobject.h`).
    pub tuple_items: u16,
    /// `Py_tss_t._key` (`pthread_key_t`, after `int _is_initialized`; `Include/pythread.h`).
    pub tss_key: u16,
    /// [`FrameModel`] as `u8`.
    pub frame_model: u8,
    /// Frames whose `_PyInterpreterFrame.owner` is this value or above are skipped
    /// ([`OWNER_INCOMPLETE`] on 3.12+), `0xff` when the version has no such frames.
    pub owner_incomplete: u8,
    /// Low bits of the code pointer read at [`PyOffsets::frame_code`] that are tags to clear
    /// ([`STACKREF_TAG_BITS`] from 3.14, 0 before).
    pub frame_code_tag_bits: u8,
    /// Explicit padding (keeps the layout free of implicit padding).
    pub _pad: [u8; 1],
}

/// The row of a CPython minor version, or `None` outside 3.8–3.15.
pub const fn offsets_for(major: u8, minor: u8) -> Option<&'static PyOffsets> {
    if major != 3 {
        return None;
    }
    match minor {
        8 => Some(&PY38),
        9 => Some(&PY39),
        10 => Some(&PY310),
        11 => Some(&PY311),
        12 => Some(&PY312),
        13 => Some(&PY313),
        14 => Some(&PY314),
        15 => Some(&PY315),
        _ => None,
    }
}

/// Oldest supported version (major, minor).
pub const MIN_VERSION: (u8, u8) = (3, 8);
/// Newest supported version (major, minor).
pub const MAX_VERSION: (u8, u8) = (3, 15);

// Fields shared by every row.
const COMMON: PyOffsets = PyOffsets {
    runtime_tss_key: NONE,
    runtime_interpreters_head: NONE,
    interp_threads_head: NONE,
    tstate_next: 8,
    tstate_thread_id: NONE,
    tstate_native_thread_id: NONE,
    tstate_frame: NONE,
    cframe_current_frame: NONE,
    frame_code: NONE,
    frame_back: NONE,
    frame_owner: NONE,
    frame_localsplus: NONE,
    code_filename: NONE,
    code_name: NONE,
    code_qualname: NONE,
    code_argcount: NONE,
    code_varnames: NONE,
    code_firstlineno: NONE,
    unicode_length: 16,
    unicode_state: 32,
    unicode_ascii_data: 48,
    unicode_compact_data: 72,
    object_type: 8,
    type_name: 24,
    tuple_items: 24,
    tss_key: 4,
    frame_model: FrameModel::FrameObject as u8,
    owner_incomplete: 0xff,
    frame_code_tag_bits: 0,
    _pad: [0; 1],
};

/// 3.8 (tag v3.8.18): `Include/internal/pycore_pystate.h` (runtime, gilstate, interpreter),
/// `Include/cpython/pystate.h` (thread state), `Include/frameobject.h`, `Include/code.h`.
const PY38: PyOffsets = PyOffsets {
    runtime_tss_key: 1392,
    runtime_interpreters_head: 32,
    interp_threads_head: 8,
    tstate_thread_id: 176,
    tstate_frame: 24,
    frame_code: 32,
    frame_back: 24,
    frame_localsplus: 360,
    code_filename: 104,
    code_name: 112,
    code_argcount: 16,
    code_varnames: 72,
    code_firstlineno: 40,
    ..COMMON
};

/// 3.9 (tag v3.9.18): `Include/internal/pycore_runtime.h`, `pycore_interp.h`,
/// `Include/cpython/pystate.h`, `Include/cpython/frameobject.h`, `Include/cpython/code.h`.
const PY39: PyOffsets = PyOffsets {
    runtime_tss_key: 584,
    ..PY38
};

/// 3.10 (tag v3.10.13): as 3.9, `PyFrameObject` lost `f_stacktop` (`f_localsplus` moves).
const PY310: PyOffsets = PyOffsets {
    frame_localsplus: 352,
    ..PY39
};

/// 3.11 (tag v3.11.7): `Include/internal/pycore_runtime.h`, `pycore_interp.h` (`threads.head`),
/// `Include/cpython/pystate.h` (`cframe`, `_PyCFrame`), `Include/internal/pycore_frame.h`
/// (`_PyInterpreterFrame`), `Include/cpython/code.h` (`co_qualname`).
const PY311: PyOffsets = PyOffsets {
    runtime_tss_key: 592,
    runtime_interpreters_head: 40,
    interp_threads_head: 16,
    tstate_thread_id: 152,
    tstate_native_thread_id: 160,
    tstate_frame: 56,
    cframe_current_frame: 8,
    frame_code: 32,
    frame_back: 48,
    frame_owner: 69,
    frame_localsplus: 72,
    code_filename: 112,
    code_name: 120,
    code_qualname: 128,
    code_argcount: 56,
    code_varnames: 96,
    code_firstlineno: 72,
    frame_model: FrameModel::CFrame as u8,
    ..COMMON
};

/// 3.12 (tag v3.12.1): `autoTSSkey` moved to `_PyRuntimeState` itself; `_PyInterpreterFrame`
/// starts with `f_code`, `previous`; `PyASCIIObject` lost `wstr` (string data moves).
const PY312: PyOffsets = PyOffsets {
    runtime_tss_key: 1544,
    runtime_interpreters_head: 40,
    interp_threads_head: 72,
    tstate_thread_id: 136,
    tstate_native_thread_id: 144,
    tstate_frame: 56,
    cframe_current_frame: 0,
    frame_code: 0,
    frame_back: 8,
    frame_owner: 70,
    frame_localsplus: 72,
    code_argcount: 52,
    code_firstlineno: 68,
    unicode_ascii_data: 40,
    unicode_compact_data: 56,
    owner_incomplete: OWNER_INCOMPLETE,
    ..PY311
};

/// 3.13 (tag v3.13.0): `_PyCFrame` is gone, `PyThreadState.current_frame` points at the top
/// `_PyInterpreterFrame`, whose code is `f_executable`; `_PyRuntimeState` starts with
/// `_Py_DebugOffsets`.
const PY313: PyOffsets = PyOffsets {
    runtime_tss_key: 2160,
    runtime_interpreters_head: 632,
    interp_threads_head: 7344,
    tstate_thread_id: 152,
    tstate_native_thread_id: 160,
    tstate_frame: 72,
    cframe_current_frame: NONE,
    frame_model: FrameModel::Direct as u8,
    ..PY312
};

/// 3.14 (Debian 3.14.10, DWARF of `python3.14-dbg`): `_PyInterpreterFrame` moved to
/// `Include/internal/pycore_interpframe_structs.h`, `f_executable` is a tagged `_PyStackRef`,
/// `owner` moved behind the new `stackpointer`/`tlbc_index`; `FRAME_OWNED_BY_CSTACK` is 4 and
/// the new `FRAME_OWNED_BY_INTERPRETER` 3 (both skipped); `_PyRuntimeState` grew (the TSS key
/// and the interpreter list move); `PyTupleObject` gained `ob_hash` before `ob_item`.
const PY314: PyOffsets = PyOffsets {
    runtime_tss_key: 2336,
    runtime_interpreters_head: 808,
    frame_owner: 74,
    frame_localsplus: 80,
    tuple_items: 32,
    frame_code_tag_bits: STACKREF_TAG_BITS,
    ..PY313
};

/// 3.15 (Debian 3.15.2, DWARF of `python3.15-dbg`): `FRAME_OWNED_BY_CSTACK` is gone, base
/// frames are `FRAME_OWNED_BY_INTERPRETER` (3); `_PyRuntimeState.autoTSSkey` is gone: the bound
/// thread state lives in the static TLS variable `_Py_tss_gilstate` (see
/// [`PyProcConfig::tstate_tls_offset`]); `PyThreadState` grew before `thread_id`.
const PY315: PyOffsets = PyOffsets {
    runtime_tss_key: NONE,
    runtime_interpreters_head: 936,
    interp_threads_head: 7336,
    tstate_thread_id: 176,
    tstate_native_thread_id: 184,
    ..PY314
};

/// Flavour of the C library, which decides how a pthread key is looked up from the thread
/// pointer.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Libc {
    /// glibc: `struct pthread.specific_1stblock[key].data` for keys below 32.
    Glibc = 1,
}

/// Everything the BPF walker needs for one process: addresses in the process (load bias
/// applied) and the offsets of its CPython version. The value of the per-pid BPF hash map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PyProcConfig {
    /// Address of `_PyRuntime`.
    pub runtime_addr: u64,
    /// Address of the `Py_tss_t` holding the thread-state pthread key (`_PyRuntime` +
    /// [`PyOffsets::runtime_tss_key`]); 0 when the version has none (3.15+, which uses
    /// [`PyProcConfig::tstate_tls_offset`]).
    pub tss_key_addr: u64,
    /// Address of `PyCode_Type`: a frame whose code object has another type is not read.
    pub code_type_addr: u64,
    /// Address of `PyUnicode_Type`: a name whose object has another type is not read.
    pub unicode_type_addr: u64,
    /// Offset from the thread pointer (`fsbase` on x86_64) of the `data` pointer of pthread key
    /// 0 in glibc's `struct pthread.specific_1stblock`; key `k`'s is `16 * k` further.
    pub tls_key0_data: u64,
    /// From 3.15 (where [`PyOffsets::runtime_tss_key`] is [`NONE`]): offset from the thread
    /// pointer, two's complement (static TLS lies below it on x86_64), of the thread's
    /// `_Py_tss_gilstate`, the `PyThreadState *` the thread is bound to (what the pthread key
    /// held before). 0 for older versions.
    pub tstate_tls_offset: u64,
    /// `PY_VERSION_HEX`-style version: `major << 24 | minor << 16 | patch << 8`.
    pub version_hex: u32,
    /// [`Libc`] as `u32`.
    pub libc: u32,
    /// The version's struct offsets.
    pub offsets: PyOffsets,
}

impl PyProcConfig {
    /// Size in bytes (a multiple of 8, no implicit padding).
    pub const SIZE: usize = core::mem::size_of::<PyProcConfig>();

    /// The frame model of [`PyProcConfig::offsets`], `None` for an unknown value.
    pub const fn frame_model(&self) -> Option<FrameModel> {
        match self.offsets.frame_model {
            0 => Some(FrameModel::FrameObject),
            1 => Some(FrameModel::CFrame),
            2 => Some(FrameModel::Direct),
            _ => None,
        }
    }

    /// The record's bytes, as written into the BPF map.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `repr(C)` of integers and integer arrays with no padding (asserted below), so
        // every byte is initialised.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), Self::SIZE) }
    }
}

const _: () = assert!(core::mem::size_of::<PyOffsets>() == 26 * 2 + 2 + 2);
const _: () = assert!(PyProcConfig::SIZE == 6 * 8 + 2 * 4 + core::mem::size_of::<PyOffsets>());
const _: () = assert!(PyProcConfig::SIZE.is_multiple_of(8));
