//! The eBPF CPU profiler of pyro: what Grafana Alloy's `pyroscope.ebpf` (legacy engine) does,
//! as a library. It samples every CPU, attributes the stacks to the discovered targets,
//! symbolizes them and hands one pprof per target and process to receivers every
//! `collect_interval`.
//!
//! In the data path it sits between discovery and the receiver chain:
//!
//! ```text
//!  Discoverer ──targets──▶ Collector (this crate) ──Profile──▶ Receiver (enricher, writer, …)
//! ```
//!
//! How it works:
//! - **Kernel side** (`bpf-programs/`, embedded as `bpf/pyro.bpf.o`): a `perf_event` program on
//!   the software cpu-clock of every online CPU at `sample_rate` Hz. Each sample's kernel stack
//!   (`bpf_get_stack`) and user stack (up to 127 frames) go straight into a ring buffer record,
//!   so no stack is lost to stack-map hash collisions. With `unwind_tables_enabled` (default)
//!   the user stack is unwound in the kernel from `.eh_frame`/`.debug_frame` tables the
//!   collector builds per file ([`pyro_unwind`]), so code without frame pointers (libc, `-O2`
//!   C/C++, Rust release builds, frameless leaves) keeps its callers; mappings without a table
//!   (JIT, anonymous memory) and unsupported rows use the frame pointer. A full ring buffer and
//!   stack-read errors are counted per CPU
//!   (`pyroscope_ebpf_lost_samples_total`, `pyroscope_ebpf_stack_errors_total`).
//! - **Filtering**: a process is matched to a target on its first sample (by
//!   `__process_pid__`, else by the container id in `/proc/PID/cgroup`); processes matching no
//!   target are then dropped in the kernel through a pid filter map.
//! - **User side**: the ring buffer is drained on a short timer (the kernel never wakes the
//!   reader), stacks are symbolized right away with [`pyro_symbolize`] (so processes that exit
//!   are still reported) and counted per (target, pid); every `collect_interval` each process
//!   becomes a `cpu`/`nanoseconds` pprof, the process name as root frame, value = count ×
//!   period, sent to every receiver in `forward_to`.
//! - **Python** (`python_enabled`, default true): a matched process running CPython 3.8–3.15
//!   (detected by [`pyro_python::detect()`] on its first sample, retried while the interpreter
//!   starts) gets its `PyProcConfig` in the kernel's `PY_PROCS` map. Its samples then carry the
//!   running thread's Python frames, walked in BPF (thread pointer → pthread key →
//!   `PyThreadState` → at most 128 frames, 2–4 reads each) as code object addresses (and,
//!   before 3.11, the first argument and its type, for the class of methods); user space
//!   reads each code object's names once per process ([`pyro_python::read_code`], cached) and
//!   names frames as the legacy engine does: `"<file base name> <qualified function>"`
//!   (`"main.py Worker.run"`), `pyperf_unknown` for a frame that could not be read. As in the
//!   legacy engine, **the Python frames replace the native user frames** of such a sample
//!   (kernel frames are kept after them, the process name stays the root); a sample of a
//!   thread with no Python frame (a native thread, interpreter start-up) keeps its native
//!   stack. Another CPython version is logged once and counted
//!   (`pyroscope_ebpf_python_unsupported_total`) and keeps native stacks.
//!
//! Running it needs root (or `CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_PTRACE`,
//! `CAP_CHECKPOINT_RESTORE`), the host's pid namespace (pids from the kernel are looked up in
//! `/proc`) and a kernel with BPF ring buffers (5.8+). With `unwind_tables_enabled: false` user
//! stacks are walked through frame pointers only, as in Alloy's legacy engine: code built
//! without them then shows short stacks (a frame-pointer-less function such as most of libc
//! hides its caller). Go binaries are unwound through frame pointers (their frameless leaves'
//! callers need `.gopclntab`, not read yet).
//!
//! ```no_run
//! use std::sync::Arc;
//! use pyro_core::{DynReceiver, Labels, Target};
//! use pyro_ebpf::{Collector, EbpfConfig, EbpfMetrics};
//!
//! # async fn example(receiver: DynReceiver) -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = prometheus_client::registry::Registry::default();
//! let (handle, run) = Collector::builder(EbpfConfig::default())
//!     .targets(vec![Target::new(Labels::from_iter([
//!         ("__process_pid__", "1234"),
//!         ("service_name", "my-app"),
//!     ]))])
//!     .forward_to([receiver])
//!     .with_metrics(EbpfMetrics::register(&mut registry))
//!     .build()?;
//! tokio::spawn(run);
//! // Later, when discovery finds other processes:
//! handle.set_targets(vec![]);
//! // At exit: the last profiles are delivered, then the receivers are shut down.
//! handle.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod bpf;
mod collector;
mod config;
mod metrics;
mod profiles;
mod run;
mod targets;

pub use bpf::{BpfError, KernelCounters, KernelMapEntries};
pub use collector::{Collector, Error, PollStats};
pub use config::{ConfigError, EbpfConfig, MAX_SAMPLE_RATE};
pub use metrics::EbpfMetrics;
pub use pyro_core::cgroup::container_id_from_cgroup;
pub use run::{CollectorBuilder, CollectorHandle, DEFAULT_POLL_INTERVAL};
pub use targets::{DEFAULT_SERVICE_NAME, PROFILE_NAME};
