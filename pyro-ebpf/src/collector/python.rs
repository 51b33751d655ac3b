//! CPython processes: detection (retried while the interpreter starts), the kernel map entry,
//! and naming the code objects the kernel side reports, as the legacy engine names them.

use std::collections::HashMap;
use std::sync::Arc;

use pyro_python::{
    DetectError, FirstArg, FrameModel, Memory, ProcMem, PyProcConfig, UNKNOWN_FRAME,
};
use pyro_symbolize::{Frame, Symbolizer};

use super::{Collector, RawStack, call_sites};
use crate::metrics::Metrics;
use crate::profiles::StackFrame;

/// Detection attempts for a CPython process whose interpreter is not initialised yet (one per
/// poll, so about 2 s at the default poll interval), as pyperf retries a few times.
pub(super) const PYTHON_DETECT_ATTEMPTS: u8 = 10;

/// Code object names cached per Python process; the cache starts over when full.
const PYTHON_NAMES_CACHE_SIZE: usize = 16_384;

/// A CPython process the kernel side walks.
#[derive(Debug)]
pub(super) struct PyProc {
    config: PyProcConfig,
    mem: ProcMem,
    /// (code object, class or 0) → legacy frame name (`None`: a shim frame, dropped).
    names: HashMap<(u64, u64), Option<Arc<str>>>,
    /// Before 3.11: code object → what its first argument says about the class.
    first_args: HashMap<u64, FirstArg>,
}

impl PyProc {
    /// The class object of a frame before 3.11 (0 when none or from 3.11, where `co_qualname`
    /// carries the class).
    pub(super) fn class(&mut self, code: u64, arg0: u64, arg0_type: u64) -> u64 {
        if self.config.frame_model() != Some(FrameModel::FrameObject) || code == 0 || arg0 == 0 {
            return 0;
        }
        if self.first_args.len() >= PYTHON_NAMES_CACHE_SIZE {
            self.first_args.clear();
        }
        let (mem, config) = (&self.mem, &self.config);
        let kind = *self.first_args.entry(code).or_insert_with(|| {
            pyro_python::first_arg(mem, config, code).unwrap_or(FirstArg::Other)
        });
        pyro_python::class_of(kind, arg0, arg0_type).unwrap_or(0)
    }
}

/// Python state of a profiled process.
#[derive(Debug)]
pub(super) enum PyState {
    /// Not CPython, unsupported, detection failed, or `python_enabled` is off: native stacks.
    Native,
    /// CPython whose interpreter was not ready: detection is tried again on later polls.
    Pending { attempts: u8 },
    /// In the kernel's Python map.
    Ready(Box<PyProc>),
}

impl Collector {
    /// Detects CPython in a profiled process and hands its configuration to the kernel side.
    /// `attempts` is the number of earlier attempts that found the interpreter not ready.
    pub(super) fn detect_python(&mut self, pid: u32, attempts: u8) -> PyState {
        let detected = pyro_python::detect(pid).and_then(|p| match p {
            Some(p) => Ok(Some((ProcMem::open(pid)?, p))),
            None => Ok(None),
        });
        match detected {
            Ok(None) => PyState::Native,
            Ok(Some((mem, process))) => {
                if let Err(error) = self.sampler.set_python(pid, &process.config) {
                    tracing::debug!(pid, %error, "Could not add the Python process to the kernel map.");
                    self.metrics.python_detect_errors.inc();
                    return PyState::Native;
                }
                self.metrics.python_processes.inc();
                tracing::debug!(pid, version = %process.version, "Python frames of the process are read.");
                PyState::Ready(Box::new(PyProc {
                    config: process.config,
                    mem,
                    names: HashMap::new(),
                    first_args: HashMap::new(),
                }))
            }
            Err(DetectError::NotReady { .. }) if attempts + 1 < PYTHON_DETECT_ATTEMPTS => {
                PyState::Pending {
                    attempts: attempts + 1,
                }
            }
            Err(error @ DetectError::UnsupportedVersion { .. }) => {
                // Once per process: detection runs when the process is first classified.
                tracing::warn!(pid, %error, "Python frames are not read for this version; native stacks are kept.");
                self.metrics.python_unsupported.inc();
                PyState::Native
            }
            Err(error) => {
                tracing::debug!(pid, %error, "CPython detection failed; native stacks are kept.");
                self.metrics.python_detect_errors.inc();
                PyState::Native
            }
        }
    }

    /// Detects again the Python processes whose interpreter was not ready.
    pub(super) fn retry_python(&mut self) {
        let pending: Vec<(u32, u8)> = self
            .known
            .iter()
            .filter_map(|(pid, k)| match k.python {
                PyState::Pending { attempts } => Some((*pid, attempts)),
                _ => None,
            })
            .collect();
        for (pid, attempts) in pending {
            let state = self.detect_python(pid, attempts);
            if let Some(k) = self.known.get_mut(&pid) {
                k.python = state;
            }
        }
    }
}

/// Frame names of a Python sample, root first: the Python frames (named as the legacy engine
/// names them, `"<file base name> <qualified function>"`, [`UNKNOWN_FRAME`] for a frame that
/// could not be read), then kernel frames. The native user frames are left out, as the legacy
/// engine replaces the user stack with the Python stack: they are the interpreter's own
/// (`_PyEval_EvalFrameDefault` …) and say nothing the Python frames do not.
pub(super) fn symbolize_python(
    symbolizer: &Symbolizer,
    py: &mut PyProc,
    raw: &RawStack,
    metrics: &Metrics,
) -> Box<[StackFrame]> {
    let kernel = symbolizer.symbolize_kernel(&call_sites(&raw.kernel));
    if py.names.len() >= PYTHON_NAMES_CACHE_SIZE {
        py.names.clear();
    }
    let mut names: Vec<Arc<str>> = Vec::with_capacity(raw.python.len() + kernel.len());
    for &(code, class) in raw.python.iter().rev() {
        let name = py
            .names
            .entry((code, class))
            .or_insert_with(|| code_name(&py.mem, &py.config, code, class, metrics));
        if let Some(name) = name {
            names.push(name.clone());
        }
    }
    names.extend(kernel.into_iter().rev().map(|Frame { name, .. }| name));
    names.into_iter().map(StackFrame::Name).collect()
}

/// The legacy name of one code object (of a method of `class` before 3.11, 0 for none), `None`
/// for a shim frame the legacy engine drops.
fn code_name(
    mem: &dyn Memory,
    config: &PyProcConfig,
    code: u64,
    class: u64,
    metrics: &Metrics,
) -> Option<Arc<str>> {
    if code == 0 {
        return Some(Arc::from(UNKNOWN_FRAME));
    }
    let symbol = pyro_python::read_code(mem, config, code).map(|mut symbol| {
        if class != 0 {
            // A class that cannot be read leaves the frame unqualified, as in pyperf.
            symbol.class = pyro_python::class_name(mem, config, class).ok();
        }
        symbol
    });
    match symbol {
        Ok(symbol) if symbol.is_shim() => None,
        Ok(symbol) => Some(Arc::from(symbol.legacy_name())),
        Err(error) => {
            tracing::trace!(code, %error, "Python code object not read.");
            metrics.python_frame_errors.inc();
            Some(Arc::from(UNKNOWN_FRAME))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory where nothing can be read (an exited process, a bad address).
    struct Unreadable;

    impl Memory for Unreadable {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), pyro_python::MemError> {
            Err(pyro_python::MemError::Read {
                pid: 1,
                addr,
                len: buf.len(),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            })
        }
    }

    #[test]
    fn unreadable_python_frames_are_marked_and_counted() {
        let config = PyProcConfig {
            runtime_addr: 0,
            tss_key_addr: 0,
            code_type_addr: 0x1000,
            unicode_type_addr: 0x2000,
            tls_key0_data: 0,
            tstate_tls_offset: 0,
            version_hex: 0x030b_0000,
            libc: 1,
            offsets: *pyro_python::layout::offsets_for(3, 11).unwrap(),
        };
        let metrics = Metrics::default();
        // A frame the kernel could not read (code address 0): marked, counted in the kernel.
        assert_eq!(
            code_name(&Unreadable, &config, 0, 0, &metrics).as_deref(),
            Some(UNKNOWN_FRAME)
        );
        assert_eq!(metrics.python_frame_errors.get(), 0);
        // A code object whose names cannot be read: marked and counted here.
        assert_eq!(
            code_name(&Unreadable, &config, 0x5000, 0, &metrics).as_deref(),
            Some("pyperf_unknown")
        );
        assert_eq!(metrics.python_frame_errors.get(), 1);
    }
}
