//! The reference walker: reads a thread's Python frames through [`Memory`] with exactly the
//! offsets, bounds and steps the BPF walker uses, so that porting it to BPF is a transcription
//! and tests can check the algorithm on live processes.
//!
//! Per sample (BPF) or per thread (here):
//!
//! 1. **Thread state**: `key = Py_tss_t._key` at [`PyProcConfig::tss_key_addr`] (its
//!    `_is_initialized` must be non-zero); `tstate = *(tp + tls_key0_data + 16 * key)` where `tp`
//!    is the thread pointer (`task->thread.fsbase` in BPF; `PyThreadState.thread_id` here, which
//!    glibc sets to the same value). From 3.15 (no key): `tstate = *(tp + tstate_tls_offset)`.
//! 2. **Top frame**: [`FrameModel::FrameObject`]: `*(tstate + tstate_frame)`;
//!    [`FrameModel::CFrame`]: `*(*(tstate + tstate_frame) + cframe_current_frame)`;
//!    [`FrameModel::Direct`]: `*(tstate + tstate_frame)`.
//! 3. **Frames**, at most [`MAX_PYTHON_FRAMES`] steps (shim frames count): on 3.12+ a frame whose
//!    `owner` is [`OWNER_INCOMPLETE`](crate::layout::OWNER_INCOMPLETE) or above (C-stack shims,
//!    3.14+'s interpreter base frames) is skipped; `code = *(frame + frame_code)`, its
//!    `_PyStackRef` tag bits cleared on 3.14+ ([`frame_code`]), must have
//!    `ob_type == PyCode_Type`, else the frame is [`PyFrame::Unknown`]; then `co_name`,
//!    `co_qualname` (3.11+) and `co_filename` are read as strings; `frame = *(frame +
//!    frame_back)`. A stack still going after the bound is marked truncated.
//! 4. **Strings**: the object must have `ob_type == PyUnicode_Type` and be compact; the
//!    characters start at `sizeof(PyASCIIObject)` (ASCII) or `sizeof(PyCompactUnicodeObject)`;
//!    at most [`MAX_NAME_BYTES`] are read of a name from its start and [`MAX_FILE_BYTES`] of a
//!    file name from its **end** (the base name is what the profile shows).
//! 5. **Class, before 3.11** (as pyperf): when the first argument is named `self`, the class is
//!    `type(localsplus[0]).tp_name`; when `cls`, `localsplus[0].tp_name` (at most
//!    [`MAX_CLASS_BYTES`]). From 3.11 `co_qualname` carries the class (`Class.method`).

use crate::detect::{self, DetectError, PythonProcess};
use crate::layout::{
    FrameModel, MAX_CLASS_BYTES, MAX_FILE_BYTES, MAX_NAME_BYTES, MAX_PYTHON_FRAMES, NONE,
    PyProcConfig, STATE_ASCII_BIT, STATE_COMPACT_BIT, STATE_KIND_MASK, STATE_KIND_SHIFT,
};
use crate::mem::{MemError, Memory, ProcMem};

/// The frame name the legacy engine uses for a frame that could not be read.
pub const UNKNOWN_FRAME: &str = "pyperf_unknown";

/// Why a frame or a stack could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A memory read failed.
    #[error(transparent)]
    Memory(#[from] MemError),
    /// The thread-state key is not initialised.
    #[error("thread state key not initialised")]
    KeyNotInitialised,
    /// The config's frame model is unknown.
    #[error("unknown frame model {0}")]
    BadFrameModel(u8),
    /// The frame's code object is not a `PyCode_Type` object.
    #[error("object at {addr:#x} is not a code object")]
    NotCode {
        /// The object.
        addr: u64,
    },
    /// A name is not a `str`.
    #[error("object at {addr:#x} is not a str")]
    NotString {
        /// The object.
        addr: u64,
    },
    /// A `str` that is not compact (legacy, pre-3.12 `PyUnicode_FromUnicode` strings).
    #[error("str at {addr:#x} is not compact")]
    NotCompact {
        /// The object.
        addr: u64,
    },
    /// A `str` whose kind is not 1, 2 or 4, or whose length is negative.
    #[error("str at {addr:#x} has a bad header (kind {kind}, length {length})")]
    BadString {
        /// The object.
        addr: u64,
        /// Its kind bits.
        kind: u32,
        /// Its length.
        length: i64,
    },
}

/// What one Python frame runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PySymbol {
    /// `co_filename`, possibly only its last [`MAX_FILE_BYTES`] bytes.
    pub file: String,
    /// `co_name`.
    pub name: String,
    /// `co_qualname` (3.11+).
    pub qualname: Option<String>,
    /// Class from the `self` / `cls` argument (before 3.11).
    pub class: Option<String>,
}

impl PySymbol {
    /// The function as profiles show it: `co_qualname` when the version has one, else
    /// `Class.name` when the class is known, else `name`.
    pub fn function(&self) -> String {
        match (&self.qualname, &self.class) {
            (Some(q), _) => q.clone(),
            (None, Some(c)) => format!("{c}.{}", self.name),
            (None, None) => self.name.clone(),
        }
    }

    /// The file's base name.
    pub fn file_base_name(&self) -> &str {
        match self.file.rfind('/') {
            Some(i) if i + 1 < self.file.len() => &self.file[i + 1..],
            _ => &self.file,
        }
    }

    /// The frame name of the legacy engine: `"<file base name> <function>"`, e.g.
    /// `"work.py Shape.area"`.
    pub fn legacy_name(&self) -> String {
        format!("{} {}", self.file_base_name(), self.function())
    }

    /// Whether the legacy engine drops this frame (3.12's `_Py_InitCleanup` shim, named
    /// `__init__` in file `__init__`).
    pub fn is_shim(&self) -> bool {
        self.class.is_none() && self.file == "__init__" && self.name == "__init__"
    }
}

/// One Python frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PyFrame {
    /// A frame that was read.
    Symbol(PySymbol),
    /// A frame that could not be read (shown as [`UNKNOWN_FRAME`]).
    Unknown,
}

impl PyFrame {
    /// The legacy engine's name for the frame.
    pub fn legacy_name(&self) -> String {
        match self {
            PyFrame::Symbol(s) => s.legacy_name(),
            PyFrame::Unknown => UNKNOWN_FRAME.to_string(),
        }
    }
}

/// A thread's Python stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyStack {
    /// Frames, leaf first.
    pub frames: Vec<PyFrame>,
    /// The walk stopped at [`MAX_PYTHON_FRAMES`] with frames left.
    pub truncated: bool,
    /// Frames that could not be read (also present as [`PyFrame::Unknown`]).
    pub errors: u32,
}

/// `tstate` of the thread whose thread pointer is `tp`, by the pthread key, or from 3.15 the
/// static TLS variable at [`PyProcConfig::tstate_tls_offset`] (step 1).
pub fn thread_state_from_tls(
    mem: &dyn Memory,
    cfg: &PyProcConfig,
    tp: u64,
) -> Result<u64, WalkError> {
    if cfg.offsets.runtime_tss_key == NONE {
        return Ok(mem.read_u64(tp.wrapping_add(cfg.tstate_tls_offset))?);
    }
    let key = detect::read_tss_key(mem, &cfg.offsets, cfg.tss_key_addr)?
        .ok_or(WalkError::KeyNotInitialised)?;
    Ok(mem.read_u64(
        tp.wrapping_add(cfg.tls_key0_data)
            .wrapping_add(16 * u64::from(key)),
    )?)
}

/// The top frame of `tstate` (step 2); 0 when the thread runs no Python code.
pub fn top_frame(mem: &dyn Memory, cfg: &PyProcConfig, tstate: u64) -> Result<u64, WalkError> {
    let o = &cfg.offsets;
    let model = cfg
        .frame_model()
        .ok_or(WalkError::BadFrameModel(o.frame_model))?;
    let first = mem.read_u64(tstate.wrapping_add(u64::from(o.tstate_frame)))?;
    Ok(match model {
        FrameModel::FrameObject | FrameModel::Direct => first,
        FrameModel::CFrame if first == 0 => 0,
        FrameModel::CFrame => {
            mem.read_u64(first.wrapping_add(u64::from(o.cframe_current_frame)))?
        }
    })
}

/// Walks the frames of `tstate` (steps 2–5).
pub fn walk_thread(
    mem: &dyn Memory,
    cfg: &PyProcConfig,
    tstate: u64,
) -> Result<PyStack, WalkError> {
    let o = &cfg.offsets;
    let mut frame = top_frame(mem, cfg, tstate)?;
    let mut stack = PyStack {
        frames: Vec::new(),
        truncated: false,
        errors: 0,
    };
    for _ in 0..MAX_PYTHON_FRAMES {
        if frame == 0 {
            return Ok(stack);
        }
        let back = mem.read_u64(frame.wrapping_add(u64::from(o.frame_back)))?;
        if o.frame_owner != NONE && o.owner_incomplete != 0xff {
            let owner = mem.read_u8(frame.wrapping_add(u64::from(o.frame_owner)))?;
            if owner >= o.owner_incomplete {
                frame = back;
                continue;
            }
        }
        match read_frame(mem, cfg, frame) {
            Ok(sym) if sym.is_shim() => {}
            Ok(sym) => stack.frames.push(PyFrame::Symbol(sym)),
            Err(e) => {
                tracing::trace!(frame, error = %e, "python frame not read");
                stack.errors += 1;
                stack.frames.push(PyFrame::Unknown);
            }
        }
        frame = back;
    }
    stack.truncated = frame != 0;
    Ok(stack)
}

/// The code object address of a frame's code field: the tag bits of a `_PyStackRef` (3.14+)
/// cleared.
pub fn frame_code(raw: u64, cfg: &PyProcConfig) -> u64 {
    raw & !u64::from(cfg.offsets.frame_code_tag_bits)
}

/// Reads the symbol of one frame (steps 3–5).
pub fn read_frame(mem: &dyn Memory, cfg: &PyProcConfig, frame: u64) -> Result<PySymbol, WalkError> {
    let o = &cfg.offsets;
    let code = frame_code(
        mem.read_u64(frame.wrapping_add(u64::from(o.frame_code)))?,
        cfg,
    );
    let mut sym = read_code(mem, cfg, code)?;
    if sym.qualname.is_none() {
        // A class that cannot be read leaves the frame unqualified, as in pyperf.
        sym.class = read_class(mem, cfg, code, frame).ok().flatten();
    }
    Ok(sym)
}

/// Reads the names of one code object (`co_name`, `co_qualname` where the version has it,
/// `co_filename`): what the collector does for each code address the BPF walker reports, once
/// per process and code object. The class of a method before 3.11 needs the frame (its `self`),
/// so it is not read here.
pub fn read_code(mem: &dyn Memory, cfg: &PyProcConfig, code: u64) -> Result<PySymbol, WalkError> {
    let o = &cfg.offsets;
    if code == 0 || mem.read_u64(code.wrapping_add(u64::from(o.object_type)))? != cfg.code_type_addr
    {
        return Err(WalkError::NotCode { addr: code });
    }
    let field = |off: u16| mem.read_u64(code.wrapping_add(u64::from(off)));
    let name = read_str(mem, cfg, field(o.code_name)?, MAX_NAME_BYTES, false)?;
    let file = read_str(mem, cfg, field(o.code_filename)?, MAX_FILE_BYTES, true)?;
    let qualname = if o.code_qualname == NONE {
        None
    } else {
        Some(read_str(
            mem,
            cfg,
            field(o.code_qualname)?,
            MAX_NAME_BYTES,
            false,
        )?)
    };
    Ok(PySymbol {
        file,
        name,
        qualname,
        class: None,
    })
}

/// What the first argument of a code object tells about its class (before 3.11, as pyperf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FirstArg {
    /// Named `self`: the class is the argument's type.
    SelfArg,
    /// Named `cls`: the argument is the class.
    ClsArg,
    /// No argument, or another name: no class.
    Other,
}

/// The kind of a code object's first argument (step 5).
pub fn first_arg(mem: &dyn Memory, cfg: &PyProcConfig, code: u64) -> Result<FirstArg, WalkError> {
    let o = &cfg.offsets;
    let argcount = mem.read_u32(code.wrapping_add(u64::from(o.code_argcount)))? as i32;
    if argcount <= 0 {
        return Ok(FirstArg::Other);
    }
    let varnames = mem.read_u64(code.wrapping_add(u64::from(o.code_varnames)))?;
    let first_name = mem.read_u64(varnames.wrapping_add(u64::from(o.tuple_items)))?;
    Ok(match read_str(mem, cfg, first_name, 8, false)?.as_str() {
        "self" => FirstArg::SelfArg,
        "cls" => FirstArg::ClsArg,
        _ => FirstArg::Other,
    })
}

/// The class a method's first argument names: its type (`self`, given as `arg0_type`) or
/// itself (`cls`, `arg0`); `None` for [`FirstArg::Other`] or a null pointer.
pub fn class_of(kind: FirstArg, arg0: u64, arg0_type: u64) -> Option<u64> {
    let ty = match kind {
        FirstArg::SelfArg => arg0_type,
        FirstArg::ClsArg => arg0,
        FirstArg::Other => 0,
    };
    (ty != 0).then_some(ty)
}

/// The name of the type object at `ty` (`tp_name`, at most [`MAX_CLASS_BYTES`]), without the
/// module prefix static types carry (`module.Class` → `Class`).
pub fn class_name(mem: &dyn Memory, cfg: &PyProcConfig, ty: u64) -> Result<String, WalkError> {
    let tp_name = mem.read_u64(ty.wrapping_add(u64::from(cfg.offsets.type_name)))?;
    let name = read_c_str(mem, tp_name, MAX_CLASS_BYTES)?;
    Ok(match name.rfind('.') {
        Some(i) => name[i + 1..].to_string(),
        None => name,
    })
}

/// Class of a method before 3.11, from its `self` / `cls` first argument (step 5).
fn read_class(
    mem: &dyn Memory,
    cfg: &PyProcConfig,
    code: u64,
    frame: u64,
) -> Result<Option<String>, WalkError> {
    let o = &cfg.offsets;
    let kind = first_arg(mem, cfg, code)?;
    if kind == FirstArg::Other {
        return Ok(None);
    }
    let first = mem.read_u64(frame.wrapping_add(u64::from(o.frame_localsplus)))?;
    if first == 0 {
        return Ok(None);
    }
    let first_type = match kind {
        FirstArg::SelfArg => mem.read_u64(first.wrapping_add(u64::from(o.object_type)))?,
        _ => 0,
    };
    match class_of(kind, first, first_type) {
        Some(ty) => class_name(mem, cfg, ty).map(Some),
        None => Ok(None),
    }
}

/// Reads a compact `str` object, at most `max` bytes of characters, from its start or its end.
pub fn read_str(
    mem: &dyn Memory,
    cfg: &PyProcConfig,
    obj: u64,
    max: usize,
    from_end: bool,
) -> Result<String, WalkError> {
    let o = &cfg.offsets;
    if obj == 0
        || mem.read_u64(obj.wrapping_add(u64::from(o.object_type)))? != cfg.unicode_type_addr
    {
        return Err(WalkError::NotString { addr: obj });
    }
    let state = mem.read_u32(obj.wrapping_add(u64::from(o.unicode_state)))?;
    let length = mem.read_u64(obj.wrapping_add(u64::from(o.unicode_length)))? as i64;
    let kind = (state >> STATE_KIND_SHIFT) & STATE_KIND_MASK;
    if state & STATE_COMPACT_BIT == 0 {
        return Err(WalkError::NotCompact { addr: obj });
    }
    if !matches!(kind, 1 | 2 | 4) || length < 0 {
        return Err(WalkError::BadString {
            addr: obj,
            kind,
            length,
        });
    }
    let data = obj.wrapping_add(u64::from(if state & STATE_ASCII_BIT != 0 {
        o.unicode_ascii_data
    } else {
        o.unicode_compact_data
    }));
    let kind = kind as usize;
    let total = (length as u64).saturating_mul(kind as u64);
    let take = (total.min(max as u64) as usize) / kind * kind;
    let start = if from_end {
        data.wrapping_add(total - take as u64)
    } else {
        data
    };
    let mut buf = vec![0u8; take];
    mem.read(start, &mut buf)?;
    Ok(decode(&buf, kind))
}

/// Decodes UCS-1 (Latin-1), UCS-2 or UCS-4 little-endian characters.
fn decode(buf: &[u8], kind: usize) -> String {
    match kind {
        1 => buf.iter().map(|&b| char::from(b)).collect(),
        2 => buf
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .map(|u| char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => buf
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .map(|u| char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    }
}

/// Reads a NUL-terminated C string of at most `max` bytes (reads stop at page ends, as
/// `bpf_probe_read_user_str` would).
fn read_c_str(mem: &dyn Memory, addr: u64, max: usize) -> Result<String, WalkError> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let to_page_end = (0x1000 - (at & 0xfff)) as usize;
        let mut buf = vec![0u8; to_page_end.min(max - out.len())];
        mem.read(at, &mut buf)?;
        if let Some(nul) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..nul]);
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        at = at.wrapping_add(buf.len() as u64);
        out.extend_from_slice(&buf);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One thread of a Python process, as the reference walker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadStack {
    /// `PyThreadState.thread_id` (`pthread_self()`, the thread pointer under glibc).
    pub thread_id: u64,
    /// `PyThreadState.native_thread_id` (3.11+): the thread id in the process's pid namespace.
    pub native_thread_id: Option<u64>,
    /// The thread state, from the interpreter's thread list.
    pub tstate: u64,
    /// The thread state found through the pthread key from `thread_id`, as BPF finds it.
    pub tls_tstate: Option<u64>,
    /// The thread's Python stack.
    pub stack: PyStack,
}

/// Reads the Python stacks of a live process through `/proc/PID/mem`.
#[derive(Debug)]
pub struct ReferenceWalker {
    process: PythonProcess,
    mem: ProcMem,
}

impl ReferenceWalker {
    /// Detects CPython in `pid` (`Ok(None)` when it is not CPython).
    pub fn new(pid: u32) -> Result<Option<Self>, DetectError> {
        let Some(process) = detect::detect(pid)? else {
            return Ok(None);
        };
        let mem = ProcMem::open(pid)?;
        Ok(Some(Self { process, mem }))
    }

    /// What detection found.
    pub fn process(&self) -> &PythonProcess {
        &self.process
    }

    /// The stacks of every thread of the main interpreter. Each is walked from the thread
    /// state the pthread key gives (as BPF does); a thread whose key slot is empty is walked
    /// from the thread list instead, and shows `tls_tstate: None`.
    pub fn stacks(&self) -> Result<Vec<ThreadStack>, WalkError> {
        let cfg = &self.process.config;
        let o = &cfg.offsets;
        let mut out = Vec::new();
        for tstate in detect::thread_states(&self.mem, o, cfg.runtime_addr)? {
            let thread_id = self
                .mem
                .read_u64(tstate.wrapping_add(u64::from(o.tstate_thread_id)))?;
            let native_thread_id = if o.tstate_native_thread_id == NONE {
                None
            } else {
                Some(
                    self.mem
                        .read_u64(tstate.wrapping_add(u64::from(o.tstate_native_thread_id)))?,
                )
            };
            let tls_tstate = match thread_state_from_tls(&self.mem, cfg, thread_id) {
                Ok(0) | Err(_) => None,
                Ok(t) => Some(t),
            };
            let stack = walk_thread(&self.mem, cfg, tls_tstate.unwrap_or(tstate))?;
            out.push(ThreadStack {
                thread_id,
                native_thread_id,
                tstate,
                tls_tstate,
                stack,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Libc, offsets_for};

    const BASE: u64 = 0x10_0000;
    const CODE_TYPE: u64 = BASE + 0x100;
    const STR_TYPE: u64 = BASE + 0x200;

    /// One zeroed region of memory; reads outside it fail like unmapped memory.
    struct FakeMem(Vec<u8>);

    impl FakeMem {
        fn new() -> Self {
            Self(vec![0; 0x10_0000])
        }
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            let at = (addr - BASE) as usize;
            self.0[at..at + bytes.len()].copy_from_slice(bytes);
        }
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
        fn put_u32(&mut self, addr: u64, v: u32) {
            self.put(addr, &v.to_le_bytes());
        }
        /// A compact str at `addr` with `kind` 1/2/4 (`ascii` when every char is ASCII).
        fn put_str(&mut self, cfg: &PyProcConfig, addr: u64, s: &str, kind: u32) {
            let o = &cfg.offsets;
            let ascii = s.is_ascii() && kind == 1;
            self.put_u64(addr + u64::from(o.object_type), STR_TYPE);
            self.put_u64(addr + u64::from(o.unicode_length), s.chars().count() as u64);
            let state = (kind << STATE_KIND_SHIFT)
                | STATE_COMPACT_BIT
                | if ascii { STATE_ASCII_BIT } else { 0 };
            self.put_u32(addr + u64::from(o.unicode_state), state);
            let data = addr
                + u64::from(if ascii {
                    o.unicode_ascii_data
                } else {
                    o.unicode_compact_data
                });
            let bytes: Vec<u8> = s
                .chars()
                .flat_map(|c| {
                    let c = c as u32;
                    match kind {
                        1 => vec![c as u8],
                        2 => (c as u16).to_le_bytes().to_vec(),
                        _ => c.to_le_bytes().to_vec(),
                    }
                })
                .collect();
            self.put(data, &bytes);
        }
        /// A code object at `addr` with name/qualname/file strings after it.
        fn put_code(&mut self, cfg: &PyProcConfig, addr: u64, name: &str, qual: &str, file: &str) {
            let o = &cfg.offsets;
            self.put_u64(addr + u64::from(o.object_type), CODE_TYPE);
            let (n, q, f) = (addr + 0x200, addr + 0x400, addr + 0x600);
            self.put_u64(addr + u64::from(o.code_name), n);
            self.put_u64(addr + u64::from(o.code_qualname), q);
            self.put_u64(addr + u64::from(o.code_filename), f);
            self.put_str(cfg, n, name, 1);
            self.put_str(cfg, q, qual, 1);
            self.put_str(cfg, f, file, 1);
        }
    }

    impl Memory for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let err = || MemError::Read {
                pid: 0,
                addr,
                len: buf.len(),
                source: std::io::Error::from_raw_os_error(5),
            };
            let start = addr.checked_sub(BASE).ok_or_else(err)? as usize;
            let end = start.checked_add(buf.len()).ok_or_else(err)?;
            let src = self.0.get(start..end).ok_or_else(err)?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn config(minor: u8) -> PyProcConfig {
        PyProcConfig {
            runtime_addr: BASE + 0x1000,
            tss_key_addr: BASE + 0x2000,
            code_type_addr: CODE_TYPE,
            unicode_type_addr: STR_TYPE,
            tls_key0_data: 0x318,
            tstate_tls_offset: (-0x28i64) as u64,
            version_hex: 0x0300_0000 | (u32::from(minor) << 16),
            libc: Libc::Glibc as u32,
            offsets: *offsets_for(3, minor).expect("row"),
        }
    }

    #[test]
    fn strings_of_every_kind_and_bounds() {
        let cfg = config(12);
        let mut m = FakeMem::new();
        let at = BASE + 0x8000;
        m.put_str(&cfg, at, "héllo", 1);
        assert_eq!(read_str(&m, &cfg, at, 64, false).unwrap(), "héllo");
        m.put_str(&cfg, at, "héllo→λ", 2);
        assert_eq!(read_str(&m, &cfg, at, 64, false).unwrap(), "héllo→λ");
        // Bounded by bytes: 3 UCS-2 chars in 7 bytes.
        assert_eq!(read_str(&m, &cfg, at, 7, false).unwrap(), "hél");
        m.put_str(&cfg, at, "a🐍b", 4);
        assert_eq!(read_str(&m, &cfg, at, 64, false).unwrap(), "a🐍b");
        // File names are read from the end.
        let long = format!("/{}/work.py", "d".repeat(300));
        m.put_str(&cfg, at, &long, 1);
        let tail = read_str(&m, &cfg, at, MAX_FILE_BYTES, true).unwrap();
        assert_eq!(tail.len(), MAX_FILE_BYTES);
        assert!(long.ends_with(&tail) && tail.ends_with("/work.py"));
        let head = read_str(&m, &cfg, at, MAX_NAME_BYTES, false).unwrap();
        assert!(long.starts_with(&head) && head.len() == MAX_NAME_BYTES);
    }

    #[test]
    fn strings_that_are_not_read() {
        let cfg = config(11);
        let o = cfg.offsets;
        let mut m = FakeMem::new();
        let at = BASE + 0x8000;
        m.put_str(&cfg, at, "name", 1);
        // Not a str.
        m.put_u64(at + u64::from(o.object_type), CODE_TYPE);
        assert!(matches!(
            read_str(&m, &cfg, at, 64, false),
            Err(WalkError::NotString { .. })
        ));
        // Not compact.
        m.put_str(&cfg, at, "name", 1);
        m.put_u32(at + u64::from(o.unicode_state), 1 << STATE_KIND_SHIFT);
        assert!(matches!(
            read_str(&m, &cfg, at, 64, false),
            Err(WalkError::NotCompact { .. })
        ));
        // Bad kind, negative length.
        m.put_u32(
            at + u64::from(o.unicode_state),
            (3 << STATE_KIND_SHIFT) | STATE_COMPACT_BIT,
        );
        assert!(matches!(
            read_str(&m, &cfg, at, 64, false),
            Err(WalkError::BadString { .. })
        ));
        m.put_str(&cfg, at, "name", 1);
        m.put_u64(at + u64::from(o.unicode_length), u64::MAX);
        assert!(matches!(
            read_str(&m, &cfg, at, 64, false),
            Err(WalkError::BadString { .. })
        ));
        // A huge length reads only the bound (and fails here as the memory ends).
        m.put_u64(at + u64::from(o.unicode_length), 1 << 40);
        assert!(read_str(&m, &cfg, at, 64, true).is_err());
        assert_eq!(read_str(&m, &cfg, at, 4, false).unwrap(), "name");
        // Null and unmapped pointers.
        assert!(read_str(&m, &cfg, 0, 64, false).is_err());
        assert!(read_str(&m, &cfg, 8, 64, false).is_err());
    }

    /// 3.12: tstate → cframe → frames; shim frames skipped, a bad code object is unknown.
    #[test]
    fn walk_312_frames() {
        let cfg = config(12);
        let o = cfg.offsets;
        let mut m = FakeMem::new();
        let (tstate, cframe) = (BASE + 0x3000, BASE + 0x3800);
        let frames = [BASE + 0x4000, BASE + 0x4100, BASE + 0x4200, BASE + 0x4300];
        let codes = [BASE + 0x10000, BASE + 0x11000, BASE + 0x12000];
        m.put_u64(tstate + u64::from(o.tstate_frame), cframe);
        m.put_u64(cframe + u64::from(o.cframe_current_frame), frames[0]);
        // leaf: Shape.area; then a CSTACK shim; then a frame whose code is not a code
        // object; then <module>.
        m.put_code(&cfg, codes[0], "area", "Shape.area", "/app/work.py");
        m.put_code(&cfg, codes[2], "<module>", "<module>", "/app/main.py");
        m.put_u64(codes[1] + u64::from(o.object_type), STR_TYPE);
        for (i, f) in frames.iter().enumerate() {
            let back = frames.get(i + 1).copied().unwrap_or(0);
            m.put_u64(f + u64::from(o.frame_back), back);
        }
        m.put_u64(frames[0] + u64::from(o.frame_code), codes[0]);
        m.put(
            frames[1] + u64::from(o.frame_owner),
            &[OWNER_INCOMPLETE_VALUE],
        );
        m.put_u64(frames[2] + u64::from(o.frame_code), codes[1]);
        m.put_u64(frames[3] + u64::from(o.frame_code), codes[2]);
        let stack = walk_thread(&m, &cfg, tstate).unwrap();
        let names: Vec<String> = stack.frames.iter().map(PyFrame::legacy_name).collect();
        assert_eq!(
            names,
            ["work.py Shape.area", UNKNOWN_FRAME, "main.py <module>"]
        );
        assert_eq!(stack.errors, 1);
        assert!(!stack.truncated);

        // No Python code running: empty stack.
        m.put_u64(cframe + u64::from(o.cframe_current_frame), 0);
        assert_eq!(walk_thread(&m, &cfg, tstate).unwrap().frames, []);
        m.put_u64(tstate + u64::from(o.tstate_frame), 0);
        assert_eq!(walk_thread(&m, &cfg, tstate).unwrap().frames, []);
    }

    const OWNER_INCOMPLETE_VALUE: u8 = crate::layout::OWNER_INCOMPLETE;

    /// 3.14 and 3.15: `f_executable` is a tagged `_PyStackRef` (tag bits cleared), frames owned
    /// by the interpreter (3) or the C stack (4, 3.14) are skipped; 3.15 finds the thread state
    /// in static TLS below the thread pointer.
    #[test]
    fn walk_314_and_315_frames() {
        for minor in [14, 15] {
            let cfg = config(minor);
            let o = cfg.offsets;
            let mut m = FakeMem::new();
            let tstate = BASE + 0x3000;
            let tp = BASE + 0x8000;
            let frames = [BASE + 0x4000, BASE + 0x4100, BASE + 0x4200, BASE + 0x4300];
            let codes = [BASE + 0x10000, BASE + 0x12000];
            if minor == 15 {
                m.put_u64(tp - 0x28, tstate);
            } else {
                m.put_u32(cfg.tss_key_addr, 1);
                m.put_u32(cfg.tss_key_addr + u64::from(o.tss_key), 2);
                m.put_u64(tp + cfg.tls_key0_data + 16 * 2, tstate);
            }
            assert_eq!(thread_state_from_tls(&m, &cfg, tp).unwrap(), tstate);
            m.put_u64(tstate + u64::from(o.tstate_frame), frames[0]);
            m.put_code(&cfg, codes[0], "area", "Shape.area", "/app/work.py");
            m.put_code(&cfg, codes[1], "<module>", "<module>", "/app/main.py");
            for (i, f) in frames.iter().enumerate() {
                let back = frames.get(i + 1).copied().unwrap_or(0);
                m.put_u64(f + u64::from(o.frame_back), back);
            }
            // Reference-count tag (`Py_TAG_REFCNT`, 1) on the leaf's code; an interpreter-owned
            // and a C-stack frame (with a None-like non-code executable) in between.
            m.put_u64(frames[0] + u64::from(o.frame_code), codes[0] | 1);
            m.put(frames[1] + u64::from(o.frame_owner), &[3]);
            m.put_u64(frames[1] + u64::from(o.frame_code), STR_TYPE);
            m.put(frames[2] + u64::from(o.frame_owner), &[4]);
            m.put_u64(frames[3] + u64::from(o.frame_code), codes[1] | 3);
            let stack = walk_thread(&m, &cfg, tstate).unwrap();
            let names: Vec<String> = stack.frames.iter().map(PyFrame::legacy_name).collect();
            assert_eq!(
                names,
                ["work.py Shape.area", "main.py <module>"],
                "3.{minor}"
            );
            assert_eq!(stack.errors, 0);
        }
    }

    /// The two forms of `PyGILState_GetThisThreadState` 3.15 builds have (x86_64).
    #[test]
    fn tls_load_decoding() {
        use crate::detect::{TlsLoad, decode_tls_load};
        // Debian's python3.15 (an executable: local-exec).
        let exe = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x64, 0x48, 0x8b, 0x04, 0x25, 0xd8, 0xff, 0xff, 0xff, 0xc3,
        ];
        assert_eq!(decode_tls_load(&exe), Some(TlsLoad::ThreadPointer(-0x28)));
        assert_eq!(
            decode_tls_load(&exe[4..]),
            Some(TlsLoad::ThreadPointer(-0x28))
        );
        // A shared libpython (initial-exec through the GOT).
        let lib = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x8b, 0x05, 0x10, 0x20, 0x00, 0x00, 0x64, 0x48, 0x8b,
            0x00, 0xc3,
        ];
        assert_eq!(
            decode_tls_load(&lib),
            Some(TlsLoad::Got {
                disp: 0x2010,
                end: 11
            })
        );
        // Anything else (a call, a truncated copy) is not guessed at.
        assert_eq!(decode_tls_load(&exe[..10]), None);
        assert_eq!(decode_tls_load(&[0xe8, 0, 0, 0, 0, 0xc3]), None);
        assert_eq!(decode_tls_load(&[]), None);
    }

    /// A cycle in the frame chain (or a very deep stack) stops at the bound.
    #[test]
    fn walk_is_bounded() {
        let cfg = config(13);
        let o = cfg.offsets;
        let mut m = FakeMem::new();
        let (tstate, frame, code) = (BASE + 0x3000, BASE + 0x4000, BASE + 0x10000);
        m.put_u64(tstate + u64::from(o.tstate_frame), frame);
        m.put_u64(frame + u64::from(o.frame_back), frame);
        m.put_u64(frame + u64::from(o.frame_code), code);
        m.put_code(&cfg, code, "f", "f", "x.py");
        let stack = walk_thread(&m, &cfg, tstate).unwrap();
        assert_eq!(stack.frames.len(), MAX_PYTHON_FRAMES);
        assert!(stack.truncated);
        // A frame pointer into unmapped memory is an error, not garbage, and pointers near the
        // top of the address space do not overflow.
        m.put_u64(frame + u64::from(o.frame_back), 0x10);
        assert!(walk_thread(&m, &cfg, tstate).is_err());
        m.put_u64(frame + u64::from(o.frame_back), u64::MAX - 2);
        assert!(walk_thread(&m, &cfg, tstate).is_err());
        m.put_u64(frame + u64::from(o.frame_back), 0);
        m.put_u64(frame + u64::from(o.frame_code), u64::MAX - 4);
        assert_eq!(
            walk_thread(&m, &cfg, tstate).unwrap().frames,
            [PyFrame::Unknown]
        );
        m.put_u64(frame + u64::from(o.frame_code), code);
        m.put_u64(code + u64::from(o.code_name), u64::MAX - 1);
        assert_eq!(
            walk_thread(&m, &cfg, tstate).unwrap().frames,
            [PyFrame::Unknown]
        );
    }

    /// Before 3.11 the class comes from `self` / `cls`.
    #[test]
    fn class_from_first_argument_before_311() {
        let cfg = config(10);
        let o = cfg.offsets;
        let mut m = FakeMem::new();
        let (frame, code) = (BASE + 0x4000, BASE + 0x10000);
        let (varnames, self_name, obj, ty, tp_name) = (
            BASE + 0x20000,
            BASE + 0x20100,
            BASE + 0x21000,
            BASE + 0x22000,
            BASE + 0x22800,
        );
        m.put_u64(frame + u64::from(o.frame_code), code);
        m.put_u64(code + u64::from(o.object_type), CODE_TYPE);
        let (n, f) = (code + 0x200, code + 0x600);
        m.put_u64(code + u64::from(o.code_name), n);
        m.put_u64(code + u64::from(o.code_filename), f);
        m.put_str(&cfg, n, "area", 1);
        m.put_str(&cfg, f, "/app/work.py", 1);
        m.put_u32(code + u64::from(o.code_argcount), 1);
        m.put_u64(code + u64::from(o.code_varnames), varnames);
        m.put_u64(varnames + u64::from(o.tuple_items), self_name);
        m.put_str(&cfg, self_name, "self", 1);
        m.put_u64(frame + u64::from(o.frame_localsplus), obj);
        m.put_u64(obj + u64::from(o.object_type), ty);
        m.put_u64(ty + u64::from(o.type_name), tp_name);
        m.put(tp_name, b"shapes.Shape\0");
        let sym = read_frame(&m, &cfg, frame).unwrap();
        assert_eq!(sym.legacy_name(), "work.py Shape.area");
        // `cls`: the argument is the class itself.
        m.put_str(&cfg, self_name, "cls", 1);
        m.put_u64(frame + u64::from(o.frame_localsplus), ty);
        assert_eq!(
            read_frame(&m, &cfg, frame).unwrap().legacy_name(),
            "work.py Shape.area"
        );
        // Another first argument: no class.
        m.put_str(&cfg, self_name, "x", 1);
        assert_eq!(
            read_frame(&m, &cfg, frame).unwrap().legacy_name(),
            "work.py area"
        );
        // No arguments: no class.
        m.put_u32(code + u64::from(o.code_argcount), 0);
        assert_eq!(read_frame(&m, &cfg, frame).unwrap().class, None);
    }

    #[test]
    fn thread_state_through_the_pthread_key() {
        let cfg = config(11);
        let mut m = FakeMem::new();
        let tp = BASE + 0x5000;
        // Key not created yet.
        assert!(matches!(
            thread_state_from_tls(&m, &cfg, tp),
            Err(WalkError::KeyNotInitialised)
        ));
        m.put_u32(cfg.tss_key_addr, 1);
        m.put_u32(cfg.tss_key_addr + u64::from(cfg.offsets.tss_key), 3);
        m.put_u64(tp + cfg.tls_key0_data + 16 * 3, 0xdead_beef);
        assert_eq!(thread_state_from_tls(&m, &cfg, tp).unwrap(), 0xdead_beef);
    }

    #[test]
    fn legacy_names() {
        let s = PySymbol {
            file: "/usr/lib/python3.11/threading.py".into(),
            name: "run".into(),
            qualname: Some("Thread.run".into()),
            class: None,
        };
        assert_eq!(s.legacy_name(), "threading.py Thread.run");
        let shim = PySymbol {
            file: "__init__".into(),
            name: "__init__".into(),
            qualname: None,
            class: None,
        };
        assert!(shim.is_shim());
        assert_eq!(
            PySymbol {
                file: "dir/".into(),
                ..shim
            }
            .file_base_name(),
            "dir/"
        );
    }
}
