//! The collector's Prometheus metrics, named as Alloy's `pyroscope.ebpf` names them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bpf::KernelCounters;

/// Label of per-service metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabel {
    pub(crate) service_name: String,
}

/// Label of the lost-samples counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// Label of the stack-error counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StackLabel {
    pub(crate) stack: &'static str,
}

/// Metrics of one collector, registered once with [`EbpfMetrics::register`] and attached with
/// [`CollectorBuilder::with_metrics`](crate::CollectorBuilder::with_metrics). Without them the
/// collector still counts, unregistered.
#[derive(Debug, Clone, Default)]
pub struct EbpfMetrics {
    pub(crate) active_targets: Gauge,
    pub(crate) sessions: Counter,
    pub(crate) sessions_failing: Counter,
    pub(crate) pprofs: Family<ServiceLabel, Counter>,
    pub(crate) pprofs_dropped: Counter,
    pub(crate) pprof_bytes: Family<ServiceLabel, Counter>,
    pub(crate) pprof_samples: Family<ServiceLabel, Counter>,
    pub(crate) samples: Counter,
    pub(crate) lost_samples: Family<ReasonLabel, Counter>,
    pub(crate) stack_errors: Family<StackLabel, Counter>,
    pub(crate) python_processes: Counter,
    pub(crate) python_unsupported: Counter,
    pub(crate) python_detect_errors: Counter,
    pub(crate) python_frame_errors: Counter,
    pub(crate) unwind_table_bytes: Gauge,
    pub(crate) unwind_tables_loaded: Counter,
    pub(crate) unwind_tables_evicted: Counter,
    pub(crate) unwind_table_errors: Counter,
    pub(crate) unwind_unsupported_rows: Counter,
    pub(crate) unwind_samples: Family<MethodLabel, Counter>,
    pub(crate) unwind_truncated: Counter,
    pub(crate) process_changes: Counter,
    pub(crate) tracked_processes: Gauge,
}

/// Label of the unwound-samples counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabel {
    pub(crate) method: &'static str,
}

pub(crate) use EbpfMetrics as Metrics;

impl EbpfMetrics {
    /// Creates the metrics and registers them in `registry`: `pyroscope_ebpf_active_targets`,
    /// `pyroscope_ebpf_profiling_sessions_total`,
    /// `pyroscope_ebpf_profiling_sessions_failing_total`,
    /// `pyroscope_ebpf_pprofs_total{service_name}`, `pyroscope_ebpf_pprofs_dropped_total`,
    /// `pyroscope_ebpf_pprof_bytes_total{service_name}`,
    /// `pyroscope_ebpf_pprof_samples_total{service_name}`, `pyroscope_ebpf_samples_total`,
    /// `pyroscope_ebpf_lost_samples_total{reason}`, `pyroscope_ebpf_stack_errors_total{stack}`,
    /// and for Python `pyroscope_ebpf_python_processes_total` (processes whose Python frames
    /// are read), `pyroscope_ebpf_python_unsupported_total` (CPython of another version),
    /// `pyroscope_ebpf_python_detect_errors_total` and `pyroscope_ebpf_python_frame_errors_total`
    /// (walks that failed in the kernel plus code objects whose names could not be read); for
    /// table unwinding (pyro-only) `pyroscope_ebpf_unwind_table_bytes` (kernel bytes held by
    /// tables), `pyroscope_ebpf_unwind_tables_loaded_total`,
    /// `pyroscope_ebpf_unwind_tables_evicted_total`, `pyroscope_ebpf_unwind_table_errors_total`,
    /// `pyroscope_ebpf_unwind_unsupported_rows_total` (rows of loaded tables the kernel cannot
    /// follow), `pyroscope_ebpf_unwind_samples_total{method="table"|"frame_pointer"}` and
    /// `pyroscope_ebpf_unwind_truncated_total`; for process churn (pyro-only)
    /// `pyroscope_ebpf_process_changes_total` (processes classified again after an exec or a
    /// pid reuse) and `pyroscope_ebpf_tracked_processes` (processes with state, after the last
    /// collection's sweep of exited ones).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_ebpf_active_targets",
            "Targets the eBPF profiler currently matches processes against",
            m.active_targets.clone(),
        );
        registry.register(
            "pyroscope_ebpf_profiling_sessions",
            "eBPF profiling sessions started (program loaded and attached)",
            m.sessions.clone(),
        );
        registry.register(
            "pyroscope_ebpf_profiling_sessions_failing",
            "eBPF profiling sessions that failed to start",
            m.sessions_failing.clone(),
        );
        registry.register(
            "pyroscope_ebpf_pprofs",
            "Profiles built by the eBPF profiler",
            m.pprofs.clone(),
        );
        registry.register(
            "pyroscope_ebpf_pprofs_dropped",
            "Profiles not handed to the receivers within collect_interval",
            m.pprofs_dropped.clone(),
        );
        registry.register(
            "pyroscope_ebpf_pprof_bytes",
            "Bytes of gzipped profiles built by the eBPF profiler",
            m.pprof_bytes.clone(),
        );
        registry.register(
            "pyroscope_ebpf_pprof_samples",
            "CPU samples in the profiles built by the eBPF profiler",
            m.pprof_samples.clone(),
        );
        registry.register(
            "pyroscope_ebpf_samples",
            "CPU samples read from the kernel",
            m.samples.clone(),
        );
        registry.register(
            "pyroscope_ebpf_lost_samples",
            "CPU samples lost before reaching a profile, by reason",
            m.lost_samples.clone(),
        );
        registry.register(
            "pyroscope_ebpf_stack_errors",
            "Samples whose user or kernel stack could not be read",
            m.stack_errors.clone(),
        );
        registry.register(
            "pyroscope_ebpf_python_processes",
            "CPython processes whose Python frames the eBPF profiler reads",
            m.python_processes.clone(),
        );
        registry.register(
            "pyroscope_ebpf_python_unsupported",
            "CPython processes of a version the eBPF profiler cannot read (native stacks kept)",
            m.python_unsupported.clone(),
        );
        registry.register(
            "pyroscope_ebpf_python_detect_errors",
            "CPython processes whose detection failed (native stacks kept)",
            m.python_detect_errors.clone(),
        );
        registry.register(
            "pyroscope_ebpf_python_frame_errors",
            "Python samples whose walk failed in the kernel, plus code objects whose names could not be read",
            m.python_frame_errors.clone(),
        );
        registry.register(
            "pyroscope_ebpf_unwind_table_bytes",
            "Kernel bytes held by the unwind tables loaded",
            m.unwind_table_bytes.clone(),
        );
        registry.register(
            "pyroscope_ebpf_unwind_tables_loaded",
            "Unwind tables loaded into the kernel",
            m.unwind_tables_loaded.clone(),
        );
        registry.register(
            "pyroscope_ebpf_unwind_tables_evicted",
            "Unwind tables evicted under the memory budget",
            m.unwind_tables_evicted.clone(),
        );
        registry.register(
            "pyroscope_ebpf_unwind_table_errors",
            "Mappings whose unwind table could not be built or loaded (frame pointers used)",
            m.unwind_table_errors.clone(),
        );
        registry.register(
            "pyroscope_ebpf_unwind_unsupported_rows",
            "Rows of loaded unwind tables the kernel cannot follow (frame pointer used there)",
            m.unwind_unsupported_rows.clone(),
        );
        registry.register(
            "pyroscope_ebpf_unwind_samples",
            "Samples by how their user stack was unwound",
            m.unwind_samples.clone(),
        );
        registry.register(
            "pyroscope_ebpf_unwind_truncated",
            "Table-unwound samples cut at the frame limit",
            m.unwind_truncated.clone(),
        );
        registry.register(
            "pyroscope_ebpf_process_changes",
            "Processes classified again after an exec or a pid reuse",
            m.process_changes.clone(),
        );
        registry.register(
            "pyroscope_ebpf_tracked_processes",
            "Processes the eBPF profiler keeps state for",
            m.tracked_processes.clone(),
        );
        m
    }

    /// Adds what the kernel counted since the `previous` reading.
    pub(crate) fn kernel_delta(&self, previous: &KernelCounters, now: &KernelCounters) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.lost_samples
            .get_or_create(&ReasonLabel {
                reason: "ringbuf_full",
            })
            .inc_by(d(previous.ringbuf_full, now.ringbuf_full));
        self.stack_errors
            .get_or_create(&StackLabel { stack: "user" })
            .inc_by(d(previous.user_stack_errors, now.user_stack_errors));
        self.stack_errors
            .get_or_create(&StackLabel { stack: "kernel" })
            .inc_by(d(previous.kernel_stack_errors, now.kernel_stack_errors));
        self.python_frame_errors
            .inc_by(d(previous.python_read_errors, now.python_read_errors));
        let table = d(previous.table_samples, now.table_samples);
        self.unwind_samples
            .get_or_create(&MethodLabel { method: "table" })
            .inc_by(table);
        self.unwind_samples
            .get_or_create(&MethodLabel {
                method: "frame_pointer",
            })
            .inc_by(d(previous.sent, now.sent).saturating_sub(table));
        self.unwind_truncated
            .inc_by(d(previous.table_truncated, now.table_truncated));
    }
}
