//! The types the pyro eBPF CPU profiler shares between its kernel side (`bpf-programs/`, built
//! for `bpfel-unknown-none`) and its user side (`pyro-ebpf`): the sample record streamed over the
//! ring buffer, the values of the pid filter map, the indices of the loss counters, and the
//! names of maps and globals.
//!
//! Everything here is `#![no_std]` and `#[repr(C)]`, so both sides agree on the layout. The
//! `user` feature implements `aya::Pod` for the types user space reads from or writes to maps.
//!
//! ```
//! use pyro_ebpf_common::{SampleRecord, MAX_STACK_DEPTH};
//!
//! // A record is a plain byte image; user space reads it from the ring buffer.
//! let record = SampleRecord::zeroed();
//! assert_eq!(record.user_frames().len(), 0);
//! assert_eq!(record.user.len(), MAX_STACK_DEPTH);
//! assert_eq!(SampleRecord::from_bytes(record.as_bytes()), Some(record));
//! ```
#![no_std]
#![deny(missing_docs)]

pub mod python;
pub mod unwind;

use python::MAX_PYTHON_FRAMES;

/// Frames kept per stack (user and kernel each): the kernel's `perf_event_max_stack` default.
pub const MAX_STACK_DEPTH: usize = 127;

/// Bytes of a task's `comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Name of the ring buffer map carrying [`SampleRecord`]s.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the pid filter map (`u32` tgid → [`PidState`] as `u32`).
pub const MAP_PIDS: &str = "PIDS";
/// Name of the per-CPU counter array (`u64` per [`Counter`]).
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the Python process map (`u32` tgid → [`python::PyProcConfig`]).
pub const MAP_PY_PROCS: &str = "PY_PROCS";
/// Name of the perf_event program.
pub const PROGRAM_NAME: &str = "pyro_cpu_sample";

/// Global (`u32`, 0 or 1): capture user stacks.
pub const GLOBAL_COLLECT_USER: &str = "PYRO_COLLECT_USER";
/// Global (`u32`, 0 or 1): capture kernel stacks.
pub const GLOBAL_COLLECT_KERNEL: &str = "PYRO_COLLECT_KERNEL";

/// Global (`u32`, 0 or 1): walk the Python frames of the processes in [`MAP_PY_PROCS`]
/// (`python_enabled`).
pub const GLOBAL_PYTHON_ENABLED: &str = "PYRO_PYTHON_ENABLED";
/// Global (`u64`): offset of the thread pointer in `task_struct` (`thread.fsbase` on x86_64),
/// from the kernel's BTF; 0 disables the Python walker.
pub const GLOBAL_TASK_TP_OFFSET: &str = "PYRO_TASK_TP_OFFSET";

/// Size of the Python process map.
pub const PY_PROCS_MAP_SIZE: u32 = 4096;

/// Default size of the pid filter map.
pub const PIDS_MAP_SIZE: u32 = 16_384;

/// Flag in [`SampleRecord::flags`]: `bpf_get_stack` failed for the user stack.
pub const FLAG_USER_STACK_ERROR: u32 = 1;
/// Flag in [`SampleRecord::flags`]: `bpf_get_stack` failed for the kernel stack.
pub const FLAG_KERNEL_STACK_ERROR: u32 = 2;

/// Flag in [`PySampleRecord::py_flags`]: a read on the way to the top frame failed (thread
/// pointer, key, thread state or frame pointer); no Python frames.
pub const PY_FLAG_STATE_ERROR: u32 = 1;
/// Flag in [`PySampleRecord::py_flags`]: the thread-state key is not initialised or above 31.
pub const PY_FLAG_NO_KEY: u32 = 2;
/// Flag in [`PySampleRecord::py_flags`]: the thread has no `PyThreadState` (it never ran
/// Python code); no Python frames.
pub const PY_FLAG_NO_THREAD_STATE: u32 = 4;
/// Flag in [`PySampleRecord::py_flags`]: a frame read failed; the walk stopped there (the
/// frames up to it are kept, the failed one is a 0 code address).
pub const PY_FLAG_FRAME_ERROR: u32 = 8;
/// Flag in [`PySampleRecord::py_flags`]: the stack had more than [`MAX_PYTHON_FRAMES`] steps;
/// the root-most frames are missing.
pub const PY_FLAG_TRUNCATED: u32 = 16;

/// What the kernel side does with samples of a process, by its value in the pid filter map.
/// A process absent from the map is sampled, and user space classifies it on first sight.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
    /// Sample it (it matches a target).
    Profile = 1,
    /// Drop its samples in the kernel (it matches no target, or is a kernel thread).
    Ignore = 2,
}

/// Indices into the per-CPU counter array.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// perf events that fired while the idle task (pid 0) ran; not sampled.
    Idle = 0,
    /// Samples dropped in the kernel because the pid filter says to ignore the process.
    Filtered = 1,
    /// Samples written to the ring buffer.
    Sent = 2,
    /// Samples lost because the ring buffer was full.
    RingBufFull = 3,
    /// Samples whose user stack could not be read (`bpf_get_stack` error); sent without it.
    UserStackError = 4,
    /// Samples whose kernel stack could not be read (`bpf_get_stack` error); sent without it.
    KernelStackError = 5,
    /// Samples of Python processes sent with their Python frames ([`PySampleRecord`]).
    PythonSamples = 6,
    /// Python samples whose walk failed or stopped at an unreadable frame.
    PythonReadErrors = 7,
    /// Native samples whose user stack the table unwinder walked (processes with tables).
    TableSamples = 8,
    /// Of those, samples whose walk stopped at the frame limit (the stack is truncated).
    TableTruncated = 9,
    /// Frame steps that met an UNSUPPORTED row and fell back to the frame pointer.
    UnsupportedRows = 10,
    /// Frame steps taken by frame pointer inside the table unwinder (no table covers the pc:
    /// JIT code, anonymous memory, an evicted table, an END row).
    TableFpFrames = 11,
}

impl Counter {
    /// Number of counters (the size of the counter array).
    pub const COUNT: u32 = 12;

    /// All counters, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Idle,
        Counter::Filtered,
        Counter::Sent,
        Counter::RingBufFull,
        Counter::UserStackError,
        Counter::KernelStackError,
        Counter::PythonSamples,
        Counter::PythonReadErrors,
        Counter::TableSamples,
        Counter::TableTruncated,
        Counter::UnsupportedRows,
        Counter::TableFpFrames,
    ];
}

/// One CPU sample, as the kernel side writes it into the ring buffer: who was running and the
/// stacks it was running on (leaf first, as the kernel walks them).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRecord {
    /// Process id (the kernel's tgid) in the initial pid namespace.
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// CPU the sample was taken on.
    pub cpu: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Valid entries in [`SampleRecord::user`].
    pub user_len: u32,
    /// Valid entries in [`SampleRecord::kernel`].
    pub kernel_len: u32,
    /// The thread's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// User-space return addresses, leaf first.
    pub user: [u64; MAX_STACK_DEPTH],
    /// Kernel return addresses, leaf first.
    pub kernel: [u64; MAX_STACK_DEPTH],
}

impl SampleRecord {
    /// Size of a record in bytes.
    pub const SIZE: usize = core::mem::size_of::<SampleRecord>();

    /// A record of zeros.
    pub const fn zeroed() -> Self {
        Self {
            pid: 0,
            tid: 0,
            cpu: 0,
            flags: 0,
            user_len: 0,
            kernel_len: 0,
            comm: [0; COMM_LEN],
            user: [0; MAX_STACK_DEPTH],
            kernel: [0; MAX_STACK_DEPTH],
        }
    }

    /// The valid user frames, leaf first (the length is clamped to the array).
    pub fn user_frames(&self) -> &[u64] {
        let n = (self.user_len as usize).min(MAX_STACK_DEPTH);
        &self.user[..n]
    }

    /// The valid kernel frames, leaf first (the length is clamped to the array).
    pub fn kernel_frames(&self) -> &[u64] {
        let n = (self.kernel_len as usize).min(MAX_STACK_DEPTH);
        &self.kernel[..n]
    }

    /// The `comm` up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.comm[..end]
    }

    /// The record's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `SampleRecord` is `repr(C)`, made only of integers and integer arrays whose
        // sizes add up with no padding (checked below), so every byte is initialised.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), Self::SIZE) }
    }

    /// Reads a record from bytes (for instance a ring buffer entry); `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < Self::SIZE {
            return None;
        }
        // SAFETY: the length is checked, every bit pattern is a valid `SampleRecord` (integers
        // only), and `read_unaligned` needs no alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

// No padding: the byte image is fully initialised, and both sides agree on it.
const _: () = assert!(SampleRecord::SIZE == 6 * 4 + COMM_LEN + 2 * MAX_STACK_DEPTH * 8);
const _: () = assert!(SampleRecord::SIZE.is_multiple_of(8));

/// A sample of a process in the Python map: the [`SampleRecord`] followed by the Python frames
/// the kernel side walked. Frames are **code object addresses**, leaf first: user space reads
/// each code object's names once per process (`pyro-python`) and caches them, so a sample costs
/// the kernel side 3 reads per frame and no string copies. A 0 address is a frame that could not
/// be read. Before 3.11 (no `co_qualname`) each frame also carries its first local (`self` or
/// `cls` of a method) and that object's type, from which user space names the class, as pyperf
/// does; 2 more reads per frame.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PySampleRecord {
    /// The native part.
    pub sample: SampleRecord,
    /// Valid entries in [`PySampleRecord::py_code`].
    pub py_len: u32,
    /// `PY_FLAG_*` bits.
    pub py_flags: u32,
    /// `PyCodeObject` addresses of the Python frames, leaf first.
    pub py_code: [u64; MAX_PYTHON_FRAMES],
    /// Before 3.11: each frame's first local (`localsplus[0]`), 0 when unread or unset.
    pub py_arg0: [u64; MAX_PYTHON_FRAMES],
    /// Before 3.11: the type (`ob_type`) of [`PySampleRecord::py_arg0`], 0 when unread.
    pub py_arg0_type: [u64; MAX_PYTHON_FRAMES],
}

impl PySampleRecord {
    /// Size of a record in bytes.
    pub const SIZE: usize = core::mem::size_of::<PySampleRecord>();

    /// The valid code addresses, leaf first (the length is clamped to the array).
    pub fn code_frames(&self) -> &[u64] {
        let n = (self.py_len as usize).min(MAX_PYTHON_FRAMES);
        &self.py_code[..n]
    }

    /// Reads a record from bytes; `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < Self::SIZE {
            return None;
        }
        // SAFETY: the length is checked, every bit pattern is valid (integers only), and
        // `read_unaligned` needs no alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

const _: () = assert!(PySampleRecord::SIZE == SampleRecord::SIZE + 8 + 3 * 8 * MAX_PYTHON_FRAMES);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` plain integers and arrays with no padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::SampleRecord {}
    // SAFETY: as above (`PyProcConfig` asserts its size equals the sum of its fields).
    unsafe impl aya::Pod for super::python::PyProcConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_records_round_trip_and_clamp_their_length() {
        let mut r = PySampleRecord {
            sample: SampleRecord::zeroed(),
            py_len: 3,
            py_flags: PY_FLAG_TRUNCATED,
            py_code: [0; MAX_PYTHON_FRAMES],
            py_arg0: [0; MAX_PYTHON_FRAMES],
            py_arg0_type: [0; MAX_PYTHON_FRAMES],
        };
        r.sample.pid = 42;
        r.py_code[..3].copy_from_slice(&[0x10, 0x20, 0x30]);
        // SAFETY: `repr(C)` integers only, no padding (asserted above).
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&r as *const PySampleRecord).cast::<u8>(),
                PySampleRecord::SIZE,
            )
        };
        let back = PySampleRecord::from_bytes(bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.code_frames(), [0x10, 0x20, 0x30]);
        assert!(PySampleRecord::from_bytes(&bytes[..SampleRecord::SIZE]).is_none());
        r.py_len = u32::MAX;
        assert_eq!(r.code_frames().len(), MAX_PYTHON_FRAMES);
    }
}
