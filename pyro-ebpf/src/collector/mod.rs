//! The [`Collector`]: drains the kernel side, matches processes to targets, symbolizes, and
//! builds one pprof per target and process each interval. The run loop that does it on a timer
//! and sends the profiles is in [`crate::run`]; CPython processes are in [`python`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyro_core::{Profile, Target};
use pyro_ebpf_common::{COMM_LEN, PidState, PySampleRecord, SampleRecord};
use pyro_symbolize::{Frame, Symbolizer, SymbolizerConfig};

use crate::bpf::{BpfError, BpfSampler, KernelCounters, KernelMapEntries, SamplerOptions};
use crate::config::{ConfigError, EbpfConfig};
use crate::metrics::{Metrics, ReasonLabel, ServiceLabel};
use crate::profiles::{Aggregator, StackFrame};
use crate::targets::{ProcReader, ResolvedTarget, TargetIndex};

mod python;
mod tables;

use python::{PyState, symbolize_python};

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
    /// The program it ran when classified (see [`ProcReader::exe`]); `None` for a kernel
    /// thread or a process already gone.
    exe: Option<(u64, u64)>,
    /// Thread names its samples carried that were checked against `start_time` and `exe`: a
    /// sample with another name makes the collector check again whether the pid now runs
    /// another program (exec) or belongs to another process (pid reuse).
    comms: Vec<[u8; COMM_LEN]>,
    class: Class,
    python: PyState,
}

/// How long [`Collector::set_targets`] waits for the unwind tables of the processes named by
/// pid.
const PREWARM_WAIT: Duration = Duration::from_secs(2);

/// Thread names remembered per process before the check on a new name stops being cached.
const MAX_CHECKED_COMMS: usize = 32;

impl KnownPid {
    /// Whether `comm` was already checked for this process.
    fn checked(&self, comm: &[u8]) -> bool {
        self.comms.iter().any(|c| comm_eq(c, comm))
    }
}

/// Whether a fixed-size, NUL-padded name equals `comm`.
fn comm_eq(fixed: &[u8; COMM_LEN], comm: &[u8]) -> bool {
    let end = fixed.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    &fixed[..end] == comm
}

/// `comm` as a fixed-size, NUL-padded name.
fn comm_fixed(comm: &[u8]) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    let n = comm.len().min(COMM_LEN);
    out[..n].copy_from_slice(&comm[..n]);
    out
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
    names: HashMap<RawStack, Box<[StackFrame]>>,
    /// Unwind tables of the profiled processes (`unwind_tables_enabled`).
    tables: Option<tables::Tables>,
    /// `EbpfConfig::targets_only`.
    targets_only: bool,
    /// Targets of processes that exec'd, for their classification again (see `check_exec`).
    exec_targets: HashMap<u32, Arc<ResolvedTarget>>,
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
    /// Checks `config`, loads the eBPF program and attaches it to every online CPU, for a host
    /// that drives the collector itself ([`poll`](Self::poll), [`collect`](Self::collect)) and
    /// sets its targets with [`set_targets`](Self::set_targets). `collect_interval` is then the
    /// caller's rhythm, so a value other than the default is refused rather than ignored; use
    /// [`Collector::builder`] to collect on a timer.
    pub fn new(config: &EbpfConfig) -> Result<Self, Error> {
        if config.collect_interval != EbpfConfig::default().collect_interval {
            return Err(ConfigError::NoEffect {
                field: "collect_interval",
                reason: "a collector driven by hand (Collector::new) collects when its caller \
                         calls collect(); use Collector::builder to collect on a timer",
            }
            .into());
        }
        Self::with_metrics(config, &[], Metrics::default())
    }

    pub(crate) fn with_metrics(
        config: &EbpfConfig,
        targets: &[Target],
        metrics: Metrics,
    ) -> Result<Self, Error> {
        config.validate()?;
        let sampler = BpfSampler::load(SamplerOptions {
            sample_rate: config.sample_rate,
            collect_user: config.collect_user_profile,
            collect_kernel: config.collect_kernel_profile,
            python_enabled: config.python_enabled,
            unwind_bytes: (config.unwind_tables_enabled && config.collect_user_profile)
                .then_some(u64::from(config.unwind_tables_memory_mib) << 20),
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
            demangle: config.demangle,
            debug_info: config.debug_info,
            debug_info_memory_limit: config.debug_info_memory_limit,
            ..SymbolizerConfig::default()
        });
        let mut sampler = sampler;
        let tables = sampler.unwind_maps().map(|maps| {
            tables::Tables::new(
                maps,
                u64::from(config.unwind_tables_memory_mib) << 20,
                symbolizer.config().proc_root.clone(),
            )
        });
        let mut collector = Self {
            tables,
            sampler,
            procs: ProcReader::new(
                symbolizer.config().proc_root.clone(),
                config.container_id_cache_size,
            ),
            symbolizer,
            index: TargetIndex::default(),
            known: HashMap::new(),
            aggregator: Aggregator::new(config.sample_rate, config.pid_label),
            targets_only: config.targets_only,
            exec_targets: HashMap::new(),
            metrics,
            last_counters: KernelCounters::default(),
            round: HashMap::new(),
            names: HashMap::new(),
        };
        collector.set_targets(targets);
        Ok(collector)
    }

    /// Replaces the targets. Processes are matched again on their next sample.
    pub fn set_targets(&mut self, targets: &[Target]) {
        self.index = TargetIndex::with_default(targets, self.targets_only);
        self.metrics
            .active_targets
            .set(i64::try_from(self.index.len()).unwrap_or(i64::MAX));
        self.known.clear();
        self.exec_targets.clear();
        self.sampler.clear_pids();
        tracing::debug!(targets = self.index.len(), "eBPF profiler targets updated.");
        // A process named by pid gets its unwind tables now (waiting for them at most
        // PREWARM_WAIT), so its first samples are unwound with them (a process found by its container id gets them at its first sample, one
        // poll later; until then the kernel follows frame pointers). It is classified at its
        // first sample as before: a Python interpreter may not have mapped its library yet.
        if let (Some(tables), Some(maps)) = (self.tables.as_mut(), self.sampler.unwind_maps()) {
            for pid in self.index.pids() {
                tables.seen(maps, pid, &self.metrics);
            }
            tables.complete(maps, Some(Instant::now() + PREWARM_WAIT), &self.metrics);
        }
    }

    /// Drains the samples the kernel side has taken, symbolizes them (while their processes are
    /// still alive) and adds them to the current interval.
    pub fn poll(&mut self) -> PollStats {
        let mut stats = PollStats::default();
        let mut round = std::mem::take(&mut self.round);
        self.retry_python();
        if let (Some(tables), Some(maps)) = (self.tables.as_mut(), self.sampler.unwind_maps()) {
            tables.complete(maps, None, &self.metrics);
        }
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
            self.check_exec(r.pid, r.comm_bytes());
            if !self.classify(r.pid, r.comm_bytes()) {
                continue;
            }
            self.tables_seen(r.pid);
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
        self.metrics
            .tracked_processes
            .set(i64::try_from(self.known.len()).unwrap_or(i64::MAX));
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

    /// Entries of the kernel side's per-process maps now (each call walks the maps' keys).
    pub fn kernel_map_entries(&self) -> KernelMapEntries {
        self.sampler.map_entries()
    }

    /// Processes the collector keeps state for (classified, not yet seen exiting).
    pub fn tracked_processes(&self) -> usize {
        self.known.len()
    }

    /// Decides (once per process) whether samples of `pid` are profiled; tells the kernel to
    /// drop the samples of processes that are not. `comm` names the process when procfs no
    /// longer does.
    fn classify(&mut self, pid: u32, comm: &[u8]) -> bool {
        if let Some(k) = self.known.get(&pid) {
            return matches!(k.class, Class::Profile { .. });
        }
        let stat = self.procs.stat(pid);
        let target = if stat.is_some_and(|s| s.kernel_thread) {
            None
        } else {
            let procs = &self.procs;
            self.index.lookup(pid, || procs.container_id(pid))
        };
        let inherited = self.exec_targets.remove(&pid);
        let target = target.or(inherited);
        let class = match target {
            Some(target) => {
                let comm = self
                    .procs
                    .comm(pid)
                    .unwrap_or_else(|| String::from_utf8_lossy(comm).into_owned());
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
        if let Err(error) = self.sampler.set_pid_state(pid, state) {
            tracing::debug!(pid = pid, %error, "Could not record the process in the pid filter.");
        }
        tracing::trace!(pid = pid, ?state, "Process classified.");
        let profiled = matches!(class, Class::Profile { .. });
        let python = if profiled && self.sampler.python() {
            self.detect_python(pid, 0)
        } else {
            PyState::Native
        };
        let exe = stat
            .filter(|s| !s.kernel_thread)
            .and_then(|_| self.procs.exe(pid));
        self.known.insert(
            pid,
            KnownPid {
                start_time: stat.map(|s| s.start_time),
                exe,
                comms: vec![comm_fixed(comm)],
                class,
                python,
            },
        );
        profiled
    }

    /// Loads (or refreshes) the unwind tables of a profiled native process.
    fn tables_seen(&mut self, pid: u32) {
        let Some(tables) = self.tables.as_mut() else {
            return;
        };
        let Some(maps) = self.sampler.unwind_maps() else {
            return;
        };
        match self.known.get(&pid) {
            // The kernel walks Python processes' frames instead (tables loaded before the
            // interpreter was detected are dropped).
            Some(KnownPid {
                python: PyState::Ready(_),
                ..
            }) => {
                if tables.has(pid) {
                    tables.forget(maps, pid);
                }
            }
            Some(KnownPid {
                python: PyState::Pending { .. },
                ..
            }) if !tables.has(pid) => {}
            _ => tables.seen(maps, pid, &self.metrics),
        }
    }

    /// A sample of a known process under a thread name not seen yet: the pid may run another
    /// program now (exec: a shell becoming Python, a wrapper exec'ing the service) or belong
    /// to a new process (pid reuse). Then everything known about it is forgotten and it is
    /// classified again, Python detection and unwind tables included.
    fn check_exec(&mut self, pid: u32, comm: &[u8]) {
        match self.known.get(&pid) {
            Some(k) if !k.checked(comm) => {}
            _ => return,
        }
        if self.same_process(pid) {
            if let Some(k) = self.known.get_mut(&pid)
                && k.comms.len() < MAX_CHECKED_COMMS
            {
                k.comms.push(comm_fixed(comm));
            }
            return;
        }
        tracing::debug!(pid, comm = %String::from_utf8_lossy(comm), "Process exec'd or pid reused; classified again.");
        self.metrics.process_changes.inc();
        // An exec keeps the process's cgroup, so its container target holds even when the
        // process has exited by now and its cgroup can no longer be read.
        let exec = match (self.known.get(&pid), self.procs.stat(pid)) {
            (Some(k), Some(stat)) => Some(stat.start_time) == k.start_time,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let Some(KnownPid {
            class: Class::Profile { target, .. },
            ..
        }) = self.known.get(&pid)
            && exec
        {
            self.exec_targets.insert(pid, target.clone());
        }
        self.forget_process(pid);
    }

    /// Whether `pid` is still the process (start time) running the program (executable
    /// identity) it was classified with.
    fn same_process(&self, pid: u32) -> bool {
        let Some(k) = self.known.get(&pid) else {
            return false;
        };
        let Some(stat) = self.procs.stat(pid) else {
            return false;
        };
        if Some(stat.start_time) != k.start_time {
            return false;
        }
        stat.kernel_thread || k.exe.is_none() || self.procs.exe(pid) == k.exe
    }

    /// Forgets `pid` in the user-space caches, the symbolizer, the unwind tables and the
    /// kernel's pid, Python and unwinder maps.
    fn forget_process(&mut self, pid: u32) {
        self.known.remove(&pid);
        self.procs.forget(pid);
        self.symbolizer.process_exited(pid);
        self.sampler.forget_pid(pid);
        self.sampler.forget_python(pid);
        if let (Some(tables), Some(maps)) = (self.tables.as_mut(), self.sampler.unwind_maps()) {
            tables.forget(maps, pid);
        }
    }

    /// Forgets processes that exited (or whose pid was reused, or that exec'd another
    /// program) in the user-space caches, the symbolizer and the kernel's maps.
    fn sweep(&mut self) {
        let gone: Vec<u32> = self
            .known
            .keys()
            .copied()
            .filter(|&pid| !self.same_process(pid))
            .collect();
        for pid in gone {
            self.forget_process(pid);
        }
        // Tables of processes no longer tracked (targets changed).
        if let (Some(tables), Some(maps)) = (self.tables.as_mut(), self.sampler.unwind_maps()) {
            for pid in tables.pids() {
                let awaited = self.index.names_pid(pid) && self.procs.stat(pid).is_some();
                if !self.known.contains_key(&pid) && !awaited {
                    tables.forget(maps, pid);
                }
            }
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

/// Frames root first: user frames (with their files, addresses and lines), then kernel frames.
fn symbolize(symbolizer: &Symbolizer, raw: &RawStack) -> Box<[StackFrame]> {
    let user = symbolizer.symbolize_user(raw.pid, &call_sites(&raw.user));
    let kernel = symbolizer.symbolize_kernel(&call_sites(&raw.kernel));
    user.into_iter()
        .rev()
        .map(StackFrame::user)
        .chain(
            kernel
                .into_iter()
                .rev()
                .map(|Frame { name, .. }| StackFrame::Name(name)),
        )
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_sites_step_back_into_the_call_except_for_the_leaf() {
        assert_eq!(call_sites(&[0x1000, 0x2005, 0]), [0x1000, 0x2004, 0]);
        assert!(call_sites(&[]).is_empty());
    }

    #[test]
    fn manual_collector_refuses_settings_it_cannot_use() {
        let err = Collector::new(&EbpfConfig {
            collect_interval: std::time::Duration::from_secs(5),
            ..EbpfConfig::default()
        })
        .map(|_| ())
        .unwrap_err();
        assert!(err.to_string().contains("collect_interval"), "{err}");
    }
}
