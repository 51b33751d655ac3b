//! The [`Collector`]: drains the kernel side, matches processes to targets, symbolizes, and
//! builds one pprof per target and process each `collect_interval`; and the run loop that sends
//! them to the receivers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_client::registry::Registry;
use pyro_core::{Fanout, Profile, Receiver, Target};
use pyro_ebpf_common::{PidState, PySampleRecord, SampleRecord};
use pyro_python::{
    DetectError, FirstArg, FrameModel, Memory, ProcMem, PyProcConfig, UNKNOWN_FRAME,
};
use pyro_symbolize::{Frame, Symbolizer, SymbolizerConfig};
use tokio::sync::watch;

use crate::bpf::{BpfError, BpfSampler, KernelCounters, SamplerOptions};
use crate::config::{ConfigError, EbpfConfig};
use crate::metrics::{Metrics, ReasonLabel, ServiceLabel};
use crate::profiles::Aggregator;
use crate::targets::{ProcReader, ResolvedTarget, TargetIndex};

/// How often the ring buffer is drained by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Profiles sent at once to the receivers (Alloy uses at most 32 workers).
const SEND_CONCURRENCY: usize = 32;

/// Starting the collector failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid pyroscope.ebpf config: {0}")]
    Config(#[from] ConfigError),
    /// The eBPF program could not be loaded or attached.
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// What one [`Collector::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Samples read from the ring buffer.
    pub samples: u64,
    /// Of those, samples of processes matching a target.
    pub profiled: u64,
    /// Of the profiled ones, samples with no frame at all (not reported, as in Alloy).
    pub empty: u64,
}

/// Detection attempts for a CPython process whose interpreter is not initialised yet (one per
/// poll, so about 2 s at the default poll interval), as pyperf retries a few times.
const PYTHON_DETECT_ATTEMPTS: u8 = 10;

/// Code object names cached per Python process; the cache starts over when full.
const PYTHON_NAMES_CACHE_SIZE: usize = 16_384;

/// A CPython process the kernel side walks.
#[derive(Debug)]
struct PyProc {
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
    fn class(&mut self, code: u64, arg0: u64, arg0_type: u64) -> u64 {
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
enum PyState {
    /// Not CPython, unsupported, detection failed, or `python_enabled` is off: native stacks.
    Native,
    /// CPython whose interpreter was not ready: detection is tried again on later polls.
    Pending { attempts: u8 },
    /// In the kernel's Python map.
    Ready(Box<PyProc>),
}

/// How a process is treated, decided on its first sample.
#[derive(Debug, Clone)]
enum Class {
    Profile {
        target: Arc<ResolvedTarget>,
        comm: Arc<str>,
    },
    Ignore,
}

#[derive(Debug)]
struct KnownPid {
    /// `None` when the process was already gone when first seen.
    start_time: Option<u64>,
    class: Class,
    python: PyState,
}

/// Raw stack of one process, as read from the kernel (leaf first).
#[derive(Debug, PartialEq, Eq, Hash)]
struct RawStack {
    pid: u32,
    user: Box<[u64]>,
    kernel: Box<[u64]>,
    /// (code object, class object or 0) of the Python frames (leaf first); empty for a native
    /// sample.
    python: Box<[(u64, u64)]>,
}

/// The eBPF CPU profiler, loaded and attached to every online CPU. Dropping it detaches the
/// program.
///
/// Most hosts use [`Collector::builder`], which runs it on a timer and sends the profiles. The
/// methods here drive it by hand: [`poll`](Self::poll) drains and symbolizes the samples taken
/// so far (call it a few times a second), [`collect`](Self::collect) returns one profile per
/// target and process for everything since the last collection.
pub struct Collector {
    sampler: BpfSampler,
    symbolizer: Symbolizer,
    procs: ProcReader,
    index: TargetIndex,
    known: HashMap<u32, KnownPid>,
    aggregator: Aggregator,
    metrics: Metrics,
    last_counters: KernelCounters,
    round: HashMap<RawStack, u64>,
    /// Names of the raw stacks seen this interval: a busy process repeats the same few stacks,
    /// symbolized once per interval instead of once per poll. Cleared at each collection.
    names: HashMap<RawStack, Box<[Arc<str>]>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("cpus", &self.sampler.cpus())
            .field("targets", &self.index.len())
            .field("known_pids", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A builder for a collector that runs on its own and sends its profiles to
    /// `config.forward_to`.
    pub fn builder(config: EbpfConfig) -> CollectorBuilder {
        CollectorBuilder {
            config,
            metrics: Metrics::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// Checks `config`, loads the eBPF program and attaches it to every online CPU; matching
    /// processes against `config.targets` (`forward_to` and `collect_interval` are not used
    /// here: the caller collects).
    pub fn new(config: &EbpfConfig) -> Result<Self, Error> {
        Self::with_metrics(config, Metrics::default())
    }

    fn with_metrics(config: &EbpfConfig, metrics: Metrics) -> Result<Self, Error> {
        let demangle = config.demangle_mode()?;
        let sampler = BpfSampler::load(SamplerOptions {
            sample_rate: config.sample_rate,
            collect_user: config.collect_user_profile,
            collect_kernel: config.collect_kernel_profile,
            python_enabled: config.python_enabled,
        })
        .inspect_err(|error| {
            metrics.sessions_failing.inc();
            tracing::warn!(%error, "Could not start the eBPF profiler.");
        })?;
        metrics.sessions.inc();
        let symbolizer = Symbolizer::new(SymbolizerConfig {
            pid_cache_size: config.pid_cache_size,
            build_id_cache_size: config.build_id_cache_size,
            same_file_cache_size: config.same_file_cache_size,
            demangle,
            ..SymbolizerConfig::default()
        });
        let mut collector = Self {
            sampler,
            procs: ProcReader::new(
                symbolizer.config().proc_root.clone(),
                config.container_id_cache_size,
            ),
            symbolizer,
            index: TargetIndex::default(),
            known: HashMap::new(),
            aggregator: Aggregator::new(config.sample_rate),
            metrics,
            last_counters: KernelCounters::default(),
            round: HashMap::new(),
            names: HashMap::new(),
        };
        collector.set_targets(&config.targets);
        Ok(collector)
    }

    /// Replaces the targets. Processes are matched again on their next sample.
    pub fn set_targets(&mut self, targets: &[Target]) {
        self.index = TargetIndex::new(targets);
        self.metrics
            .active_targets
            .set(i64::try_from(self.index.len()).unwrap_or(i64::MAX));
        self.known.clear();
        self.sampler.clear_pids();
        tracing::debug!(targets = self.index.len(), "eBPF profiler targets updated.");
    }

    /// Drains the samples the kernel side has taken, symbolizes them (while their processes are
    /// still alive) and adds them to the current interval.
    pub fn poll(&mut self) -> PollStats {
        let mut stats = PollStats::default();
        let mut round = std::mem::take(&mut self.round);
        self.retry_python();
        let mut records = Vec::new();
        let malformed = self
            .sampler
            .drain(|r: &SampleRecord, py: Option<&PySampleRecord>| {
                let python: Vec<[u64; 3]> = py
                    .map(|p| {
                        let n = p.code_frames().len();
                        (0..n)
                            .map(|i| [p.py_code[i], p.py_arg0[i], p.py_arg0_type[i]])
                            .collect()
                    })
                    .unwrap_or_default();
                records.push((*r, python));
            });
        if malformed > 0 {
            self.metrics
                .lost_samples
                .get_or_create(&ReasonLabel {
                    reason: "malformed",
                })
                .inc_by(malformed);
        }
        for (r, python) in records {
            stats.samples += 1;
            if !self.classify(&r) {
                continue;
            }
            stats.profiled += 1;
            let python: Box<[(u64, u64)]> = match self.known.get_mut(&r.pid) {
                Some(KnownPid {
                    python: PyState::Ready(py),
                    ..
                }) => python
                    .iter()
                    .map(|&[code, arg0, arg0_type]| (code, py.class(code, arg0, arg0_type)))
                    .collect(),
                _ => python.iter().map(|&[code, ..]| (code, 0)).collect(),
            };
            *round
                .entry(RawStack {
                    pid: r.pid,
                    user: r.user_frames().into(),
                    kernel: r.kernel_frames().into(),
                    python,
                })
                .or_insert(0) += 1;
        }
        for (raw, count) in round.drain() {
            let pid = raw.pid;
            let Some(KnownPid {
                class: Class::Profile { target, comm },
                python,
                ..
            }) = self.known.get_mut(&pid)
            else {
                continue;
            };
            let stack = match self.names.get(&raw) {
                Some(names) => names.clone(),
                None => {
                    let names = match python {
                        PyState::Ready(py) if !raw.python.is_empty() => {
                            symbolize_python(&self.symbolizer, py, &raw, &self.metrics)
                        }
                        _ => symbolize(&self.symbolizer, &raw),
                    };
                    self.names.insert(raw, names.clone());
                    names
                }
            };
            if stack.is_empty() {
                stats.empty += count;
                continue;
            }
            self.aggregator.add(target, pid, comm, stack, count);
        }
        self.round = round;
        self.metrics.samples.inc_by(stats.samples);
        let counters = self.sampler.counters();
        self.metrics.kernel_delta(&self.last_counters, &counters);
        self.last_counters = counters;
        stats
    }

    /// Polls, then returns one gzipped pprof per (target, process) for everything sampled since
    /// the last collection, and forgets processes that exited.
    pub fn collect(&mut self) -> Vec<Profile> {
        self.poll();
        self.names.clear();
        let built = self.aggregator.build();
        self.sweep();
        built
            .into_iter()
            .map(|b| {
                let service = ServiceLabel {
                    service_name: b.service_name,
                };
                self.metrics.pprofs.get_or_create(&service).inc();
                self.metrics
                    .pprof_bytes
                    .get_or_create(&service)
                    .inc_by(b.profile.raw.len() as u64);
                self.metrics
                    .pprof_samples
                    .get_or_create(&service)
                    .inc_by(b.samples);
                b.profile
            })
            .collect()
    }

    /// The kernel side's counters since load (samples sent, lost, stack-read errors).
    pub fn kernel_counters(&self) -> KernelCounters {
        self.sampler.counters()
    }

    /// Decides (once per process) whether samples of `r.pid` are profiled; tells the kernel to
    /// drop the samples of processes that are not.
    fn classify(&mut self, r: &SampleRecord) -> bool {
        if let Some(k) = self.known.get(&r.pid) {
            return matches!(k.class, Class::Profile { .. });
        }
        let stat = self.procs.stat(r.pid);
        let target = if stat.is_some_and(|s| s.kernel_thread) {
            None
        } else {
            let procs = &self.procs;
            self.index.lookup(r.pid, || procs.container_id(r.pid))
        };
        let class = match target {
            Some(target) => {
                let comm = self
                    .procs
                    .comm(r.pid)
                    .unwrap_or_else(|| String::from_utf8_lossy(r.comm_bytes()).into_owned());
                Class::Profile {
                    target,
                    comm: Arc::from(comm),
                }
            }
            None => Class::Ignore,
        };
        let state = match class {
            Class::Profile { .. } => PidState::Profile,
            Class::Ignore => PidState::Ignore,
        };
        if let Err(error) = self.sampler.set_pid_state(r.pid, state) {
            tracing::debug!(pid = r.pid, %error, "Could not record the process in the pid filter.");
        }
        tracing::trace!(pid = r.pid, ?state, "Process classified.");
        let profiled = matches!(class, Class::Profile { .. });
        let python = if profiled && self.sampler.python() {
            self.detect_python(r.pid, 0)
        } else {
            PyState::Native
        };
        self.known.insert(
            r.pid,
            KnownPid {
                start_time: stat.map(|s| s.start_time),
                class,
                python,
            },
        );
        profiled
    }

    /// Detects CPython in a profiled process and hands its configuration to the kernel side.
    /// `attempts` is the number of earlier attempts that found the interpreter not ready.
    fn detect_python(&mut self, pid: u32, attempts: u8) -> PyState {
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
    fn retry_python(&mut self) {
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

    /// Forgets processes that exited (or whose pid was reused) in the user-space caches, the
    /// symbolizer and the kernel's pid filter.
    fn sweep(&mut self) {
        let gone: Vec<u32> = self
            .known
            .iter()
            .filter(|(pid, k)| {
                let now = self.procs.stat(**pid).map(|s| s.start_time);
                now.is_none() || now != k.start_time
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            self.known.remove(&pid);
            self.procs.forget(pid);
            self.symbolizer.process_exited(pid);
            self.sampler.forget_pid(pid);
            self.sampler.forget_python(pid);
        }
        // Entries the kernel map holds for processes user space no longer tracks (classified
        // before a restart of the map's owner, or evicted above while a sample was in flight).
        for pid in self.sampler.known_pids() {
            if !self.known.contains_key(&pid) {
                self.sampler.forget_pid(pid);
            }
        }
    }
}

/// Frame names root first: user frames, then kernel frames.
fn symbolize(symbolizer: &Symbolizer, raw: &RawStack) -> Box<[Arc<str>]> {
    let user = symbolizer.symbolize_user(raw.pid, &call_sites(&raw.user));
    let kernel = symbolizer.symbolize_kernel(&call_sites(&raw.kernel));
    user.into_iter()
        .rev()
        .chain(kernel.into_iter().rev())
        .map(|Frame { name, .. }| name)
        .collect()
}

/// Frame names of a Python sample, root first: the Python frames (named as the legacy engine
/// names them, `"<file base name> <qualified function>"`, [`UNKNOWN_FRAME`] for a frame that
/// could not be read), then kernel frames. The native user frames are left out, as the legacy
/// engine replaces the user stack with the Python stack: they are the interpreter's own
/// (`_PyEval_EvalFrameDefault` …) and say nothing the Python frames do not.
fn symbolize_python(
    symbolizer: &Symbolizer,
    py: &mut PyProc,
    raw: &RawStack,
    metrics: &crate::metrics::Metrics,
) -> Box<[Arc<str>]> {
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
    names.into()
}

/// The legacy name of one code object (of a method of `class` before 3.11, 0 for none), `None`
/// for a shim frame the legacy engine drops.
fn code_name(
    mem: &dyn Memory,
    config: &PyProcConfig,
    code: u64,
    class: u64,
    metrics: &crate::metrics::Metrics,
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

/// The kernel reports return addresses for all frames but the leaf; the call instruction is
/// just before, so look up `addr - 1` to stay inside the calling function.
fn call_sites(frames: &[u64]) -> Vec<u64> {
    frames
        .iter()
        .enumerate()
        .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
        .collect()
}

/// Builds a running [`Collector`]: see [`Collector::builder`].
#[derive(Debug)]
pub struct CollectorBuilder {
    config: EbpfConfig,
    metrics: Metrics,
    poll_interval: Duration,
}

impl CollectorBuilder {
    /// Registers the collector's metrics in `registry`: `pyroscope_ebpf_active_targets`,
    /// `pyroscope_ebpf_profiling_sessions_total`, `pyroscope_ebpf_profiling_sessions_failing_total`,
    /// `pyroscope_ebpf_pprofs_total{service_name}`, `pyroscope_ebpf_pprofs_dropped_total`,
    /// `pyroscope_ebpf_pprof_bytes_total{service_name}`,
    /// `pyroscope_ebpf_pprof_samples_total{service_name}`, `pyroscope_ebpf_samples_total`,
    /// `pyroscope_ebpf_lost_samples_total{reason}`, `pyroscope_ebpf_stack_errors_total{stack}`,
    /// and for Python `pyroscope_ebpf_python_processes_total` (processes whose Python frames
    /// are read), `pyroscope_ebpf_python_unsupported_total` (CPython of another version),
    /// `pyroscope_ebpf_python_detect_errors_total` and `pyroscope_ebpf_python_frame_errors_total`
    /// (walks that failed in the kernel plus code objects whose names could not be read).
    #[must_use]
    pub fn registry(mut self, registry: &mut Registry) -> Self {
        self.metrics = Metrics::register(registry);
        self
    }

    /// How often the kernel's ring buffer is drained (default [`DEFAULT_POLL_INTERVAL`]). The
    /// kernel side never wakes the reader, so this bounds how long a sample waits.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Checks the config, loads and attaches the eBPF program, and returns a handle and the
    /// future that runs the collector. Spawn the future on a tokio runtime; it ends when every
    /// handle is dropped, after a last collection that forwards what was sampled since the
    /// previous one (the program is then detached).
    pub fn build(
        self,
    ) -> Result<(CollectorHandle, impl Future<Output = ()> + Send + 'static), Error> {
        let Self {
            config,
            metrics,
            poll_interval,
        } = self;
        let collector = Collector::with_metrics(&config, metrics.clone())?;
        let (targets_tx, targets_rx) = watch::channel(config.targets.clone());
        let handle = CollectorHandle {
            targets: Arc::new(targets_tx),
        };
        let run = run(
            collector,
            targets_rx,
            Fanout::new(config.forward_to.iter().cloned()),
            config.collect_interval,
            poll_interval,
            metrics,
        );
        Ok((handle, run))
    }
}

/// Controls a running collector. Cloneable; when the last clone is dropped the collector stops.
#[derive(Debug, Clone)]
pub struct CollectorHandle {
    targets: Arc<watch::Sender<Vec<Target>>>,
}

impl CollectorHandle {
    /// Replaces the targets; only the latest value matters if several are set quickly.
    pub fn set_targets(&self, targets: Vec<Target>) {
        self.targets.send_replace(targets);
    }
}

/// Runs blocking collector work off the async threads, handing the collector back.
async fn blocking<T: Send + 'static>(
    collector: Box<Collector>,
    f: impl FnOnce(&mut Collector) -> T + Send + 'static,
) -> Option<(Box<Collector>, T)> {
    let res = tokio::task::spawn_blocking(move || {
        let mut collector = collector;
        let out = f(&mut collector);
        (collector, out)
    })
    .await;
    match res {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::error!(%error, "eBPF collector task failed; stopping.");
            None
        }
    }
}

async fn run(
    collector: Collector,
    mut targets: watch::Receiver<Vec<Target>>,
    fanout: Fanout,
    collect_interval: Duration,
    poll_interval: Duration,
    metrics: Metrics,
) {
    use tokio::time::{Instant, MissedTickBehavior, interval, interval_at};

    let mut collector = Box::new(collector);
    let mut poll = interval(poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut collect = interval_at(Instant::now() + collect_interval, collect_interval);
    collect.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sending: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            biased;
            changed = targets.changed() => {
                if changed.is_err() {
                    break;
                }
                let new = targets.borrow_and_update().clone();
                let Some((c, ())) = blocking(collector, move |c| c.set_targets(&new)).await else {
                    return;
                };
                collector = c;
            }
            _ = collect.tick() => {
                let Some((c, profiles)) = blocking(collector, Collector::collect).await else {
                    return;
                };
                collector = c;
                tracing::debug!(profiles = profiles.len(), "eBPF profiles built.");
                if let Some(previous) = sending.take() {
                    // Bounded by its own timeout.
                    let _ = previous.await;
                }
                sending = Some(tokio::spawn(send(
                    fanout.clone(),
                    profiles,
                    collect_interval,
                    metrics.clone(),
                )));
            }
            _ = poll.tick() => {
                let Some((c, _)) = blocking(collector, Collector::poll).await else {
                    return;
                };
                collector = c;
            }
        }
    }
    // Every handle is gone: flush what was sampled since the last collection, so a host that
    // stops the profiler loses nothing, then detach.
    if let Some(previous) = sending.take() {
        let _ = previous.await;
    }
    if let Some((c, profiles)) = blocking(collector, Collector::collect).await {
        drop(c);
        send(fanout, profiles, collect_interval, metrics).await;
    }
    tracing::debug!("eBPF profiler stopped.");
}

/// Hands `profiles` to the receivers, at most [`SEND_CONCURRENCY`] at a time, within `timeout`;
/// profiles not handed over by then are counted as dropped.
async fn send(fanout: Fanout, profiles: Vec<Profile>, timeout: Duration, metrics: Metrics) {
    let total = profiles.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let sends = futures_util::stream::iter(profiles).for_each_concurrent(SEND_CONCURRENCY, |p| {
        let fanout = &fanout;
        let done = &done;
        async move {
            let service = p.service_name().unwrap_or_default().to_owned();
            if let Err(error) = fanout.append(p).await {
                tracing::warn!(service_name = service, %error, "Receivers refused an eBPF profile.");
            }
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    if tokio::time::timeout(timeout, sends).await.is_err() {
        let dropped = total.saturating_sub(done.load(std::sync::atomic::Ordering::Relaxed));
        metrics.pprofs_dropped.inc_by(dropped);
        tracing::warn!(dropped, "eBPF profiles not sent within collect_interval.");
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

    #[test]
    fn call_sites_step_back_into_the_call_except_for_the_leaf() {
        assert_eq!(call_sites(&[0x1000, 0x2005, 0]), [0x1000, 0x2004, 0]);
        assert!(call_sites(&[]).is_empty());
    }

    #[test]
    fn build_rejects_invalid_config_before_loading_anything() {
        let mut registry = Registry::default();
        let err = Collector::builder(EbpfConfig {
            sample_rate: 0,
            ..EbpfConfig::default()
        })
        .registry(&mut registry)
        .build()
        .map(|_| ())
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Config(ConfigError::SampleRate { value: 0 })
        ));
        let err = Collector::new(&EbpfConfig {
            demangle: "everything".into(),
            ..EbpfConfig::default()
        })
        .map(|_| ())
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pyroscope.ebpf config: unknown demangle mode \"everything\": expected none, simplified, templates or full"
        );
        // Nothing was loaded, so no session was started or failed.
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("pyroscope_ebpf_profiling_sessions_total 0"),
            "{text}"
        );
    }
}
