//! CPython support for the pyro eBPF profiler: everything user space does so that the BPF side
//! can turn a sample of a Python process into Python frames (`"<file> <Class>.<function>"`, as
//! the legacy Pyroscope engine names them) instead of interpreter internals.
//!
//! Where it sits: the collector (`pyro-ebpf`) calls [`detect()`] on a process it sees for the
//! first time; for CPython 3.8–3.15 it gets a [`PyProcConfig`] (addresses in the process and the
//! version's struct offsets) to put into a BPF hash map keyed by pid, which the kernel-side
//! walker reads on every sample. Other versions give [`DetectError::UnsupportedVersion`]
//! (logged once, counted, native stacks kept). [`layout`] re-exports these types from
//! `pyro-ebpf-common`, which the BPF program shares. The BPF walker reports code object
//! addresses; [`read_code`] reads their names (once per process and code object, in the
//! collector). [`ReferenceWalker`] reads a live process's frames through `/proc/PID/mem` with
//! the same offsets and steps as the BPF walker (see [`walker`]): tests check it against
//! py-spy. [`kernel`] finds where the BPF
//! side reads a task's thread pointer (`task_struct.thread.fsbase`) from the kernel's BTF.
//!
//! ```
//! use pyro_python::layout::{offsets_for, FrameModel, NONE};
//!
//! let py311 = offsets_for(3, 11).expect("3.11 is in the table");
//! assert_eq!(py311.frame_model, FrameModel::CFrame as u8);
//! assert_ne!(py311.code_qualname, NONE); // 3.11 has co_qualname
//! assert!(offsets_for(3, 16).is_none()); // unsupported: native stacks only
//!
//! # fn frames(pid: u32) -> Result<(), Box<dyn std::error::Error>> {
//! // On a live process (needs the right to read its memory):
//! if let Some(walker) = pyro_python::ReferenceWalker::new(pid)? {
//!     for thread in walker.stacks()? {
//!         for frame in &thread.stack.frames {
//!             println!("{}", frame.legacy_name()); // e.g. "work.py Shape.area"
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod detect;
pub mod kernel;
pub mod layout;
pub mod mem;
pub mod walker;

pub use detect::{DetectError, PyVersion, PythonModule, PythonProcess, detect, find_python_module};
pub use kernel::{Btf, BtfError, thread_pointer_offset};
pub use layout::{FrameModel, PyOffsets, PyProcConfig};
pub use mem::{MemError, Memory, ProcMem};
pub use walker::{
    FirstArg, PyFrame, PyStack, PySymbol, ReferenceWalker, ThreadStack, UNKNOWN_FRAME, WalkError,
    class_name, class_of, first_arg, read_code,
};
