//! The two Alloy pipelines of the examples, wired once so that the example programs and the
//! end-to-end test (`examples/tests/e2e.rs`) run exactly the same code.
//!
//! - [`EbpfToPyroscope`]: `discovery.process` → `discovery.relabel` → `pyroscope.ebpf` →
//!   `pyroscope.write` (example `ebpf_to_pyroscope`).
//! - [`ReceiveEnrichWrite`]: `pyroscope.receive_http` → `pyroscope.enrich` (targets from
//!   `discovery.process` → `discovery.relabel`) → `pyroscope.write` or a directory (example
//!   `receive_enrich_write`).
//!
//! Each `start` builds the stages back to front (the writer first, since every stage forwards
//! to the next one) and spawns the futures the crates hand out on the current tokio runtime.
//! Shutting a pipeline down is one call on its first stage: every stage delivers what it holds
//! and passes `shutdown` on to the next ([`pyro_core::lifecycle`]), so nothing in flight is lost
//! and no stage needs hand-written sequencing.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::registry::Registry;
use pyro_core::discoverer::{FeedHandle, feed};
use pyro_core::{
    AppendError, DynReceiver, LifecycleError, Profile, Receiver, SinkReceiver, async_trait,
};
use pyro_discovery::process::{ProcessDiscoverer, ProcessDiscoveryConfig};
use pyro_discovery::relabel::{Action, RelabelConfig, RelabelDiscoverer, RelabelRules};
use pyro_ebpf::{Collector, CollectorHandle, EbpfConfig, EbpfMetrics};
use pyro_enrich::{EnrichConfig, EnrichMetrics, Enricher};
use pyro_file::FileSink;
use pyro_receive::{ReceiveMetrics, Server, ServerHandle};
use pyro_write::{EndpointConfig, WriteMetrics, Writer, WriterConfig};

/// Errors of these helpers: whatever a stage reports when it is built.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// `discovery.relabel` rules naming each process after its executable:
/// `__meta_process_exe="/usr/bin/python3.11"` → `service_name="python3.11"`. A process whose
/// binary was replaced or removed after it started has `__meta_process_exe` =
/// `"<path> (deleted)"` (as in Alloy); it is named after the binary all the same.
///
/// ```
/// use pyro_core::Labels;
/// use pyro_discovery::relabel::RelabelRules;
///
/// let rules = RelabelRules::new(&pyro_examples::pipelines::service_name_from_exe()).unwrap();
/// let out = rules.apply(Labels::from_iter([("__meta_process_exe", "/usr/sbin/nginx")])).unwrap();
/// assert_eq!(out.get("service_name"), Some("nginx"));
/// let out = rules.apply(Labels::from_iter([("__meta_process_exe", "/usr/sbin/nginx (deleted)")])).unwrap();
/// assert_eq!(out.get("service_name"), Some("nginx"));
/// ```
pub fn service_name_from_exe() -> Vec<RelabelConfig> {
    vec![RelabelConfig {
        source_labels: vec!["__meta_process_exe".into()],
        regex: r".*/(.*?)(?: \(deleted\))?".into(),
        target_label: "service_name".into(),
        ..RelabelConfig::default()
    }]
}

/// `discovery.relabel` rules for enrichment: each process target gets a `pid` label (from
/// `__process_pid__`, to match the `pid` tag an SDK sends) and `process_exe` / `process_cwd`
/// (from `__meta_process_exe` / `__meta_process_cwd`, which a writer would drop as reserved).
///
/// ```
/// use pyro_core::Labels;
/// use pyro_discovery::relabel::RelabelRules;
///
/// let rules = RelabelRules::new(&pyro_examples::pipelines::process_metadata_rules()).unwrap();
/// let out = rules
///     .apply(Labels::from_iter([
///         ("__process_pid__", "42"),
///         ("__meta_process_exe", "/usr/bin/python3.11"),
///         ("__meta_process_cwd", "/srv/shop"),
///     ]))
///     .unwrap();
/// assert_eq!(out.get("pid"), Some("42"));
/// assert_eq!(out.get("process_exe"), Some("/usr/bin/python3.11"));
/// assert_eq!(out.get("process_cwd"), Some("/srv/shop"));
/// ```
pub fn process_metadata_rules() -> Vec<RelabelConfig> {
    vec![
        RelabelConfig {
            source_labels: vec!["__process_pid__".into()],
            target_label: "pid".into(),
            ..RelabelConfig::default()
        },
        RelabelConfig {
            action: Action::LabelMap,
            regex: "__meta_process_(exe|cwd)".into(),
            replacement: "process_$1".into(),
            ..RelabelConfig::default()
        },
    ]
}

/// `pyroscope.enrich` settings matching [`process_metadata_rules`]: profiles are matched to
/// processes by `pid`, and `process_exe` and `process_cwd` are copied onto them.
pub fn enrich_by_pid() -> EnrichConfig {
    EnrichConfig {
        target_match_label: "pid".into(),
        profiles_match_label: None,
        labels_to_copy: vec!["process_exe".into(), "process_cwd".into()],
    }
}

/// A `pyroscope.write` configuration with one endpoint at `url` and Alloy's defaults otherwise.
pub fn write_to(url: &str) -> WriterConfig {
    WriterConfig {
        endpoints: vec![EndpointConfig::new(url)],
        ..WriterConfig::default()
    }
}

/// A receiver that counts the profiles and bytes passing through it, then forwards them: what
/// the examples' progress lines report.
#[derive(Debug)]
pub struct Counting {
    next: DynReceiver,
    profiles: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

impl Counting {
    /// Counts in front of `next`.
    pub fn new(next: DynReceiver) -> Self {
        Self {
            next,
            profiles: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Profiles `next` accepted so far.
    pub fn profiles(&self) -> u64 {
        self.profiles.load(Ordering::Relaxed)
    }

    /// Payload bytes of those profiles.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Profiles `next` refused.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// `"12 profiles (340 KiB)"`, plus the refused count when there are any.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} profiles ({} KiB)",
            self.profiles(),
            self.bytes().div_ceil(1024)
        );
        if self.failed() > 0 {
            s.push_str(&format!(", {} refused", self.failed()));
        }
        s
    }
}

#[async_trait]
impl Receiver for Counting {
    async fn append(&self, profile: Profile) -> Result<(), AppendError> {
        let bytes = profile.raw.len() as u64;
        match self.next.append(profile).await {
            Ok(()) => {
                self.profiles.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.next.flush(deadline).await
    }

    async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.next.shutdown(deadline).await
    }
}

/// Process discovery followed by relabelling: the target stream both pipelines consume.
pub fn discover_processes(
    discovery: ProcessDiscoveryConfig,
    rules: &[RelabelConfig],
) -> Result<RelabelDiscoverer<ProcessDiscoverer>, BoxError> {
    Ok(RelabelDiscoverer::new(
        ProcessDiscoverer::new(discovery),
        RelabelRules::new(rules)?,
    ))
}

/// Example 2, running: discovery → relabel → eBPF collector → Pyroscope writer.
#[derive(Debug)]
pub struct EbpfToPyroscope {
    /// Counts what the collector handed to the writer.
    pub sent: Arc<Counting>,
    /// The writer, for [`Writer::stats`].
    pub writer: Arc<Writer>,
    /// The collector: the pipeline's first stage.
    pub collector: CollectorHandle,
    feed: FeedHandle,
}

impl EbpfToPyroscope {
    /// Starts the pipeline on the current tokio runtime (needs root: it loads the eBPF
    /// program). Targets come from `discovery` relabelled by `rules`, profiles go to a
    /// [`Writer`] for `write`. Metrics of every stage are registered in `registry`.
    pub fn start(
        discovery: ProcessDiscoveryConfig,
        rules: &[RelabelConfig],
        ebpf: EbpfConfig,
        write: WriterConfig,
        registry: &mut Registry,
    ) -> Result<Self, BoxError> {
        let (writer, run) = Writer::builder(write)
            .with_metrics(WriteMetrics::register(registry))
            .build()?;
        tokio::spawn(run);
        let sent = Arc::new(Counting::new(writer.clone()));
        let (collector, run) = Collector::builder(ebpf)
            .forward_to([sent.clone() as DynReceiver])
            .with_metrics(EbpfMetrics::register(registry))
            .build()?;
        tokio::spawn(run);
        let targets = discover_processes(discovery, rules)?;
        let (feed, run) = feed(&targets, [Arc::new(collector.clone()) as _]);
        tokio::spawn(run);
        Ok(Self {
            sent,
            writer,
            collector,
            feed,
        })
    }

    /// Stops discovery, then shuts the collector down: it sends what it sampled since its last
    /// collection and shuts the writer down, which delivers what it holds (all before
    /// `deadline`).
    pub async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.feed.stop();
        self.collector.shutdown(deadline).await
    }
}

/// Where [`ReceiveEnrichWrite`] sends enriched profiles.
#[derive(Debug, Clone)]
pub enum Output {
    /// Pyroscope (`pyroscope.write`).
    Write(WriterConfig),
    /// A directory of `*.pb.gz` + `*.svg` files ([`FileSink`]).
    Directory(PathBuf),
}

/// Example 3, running: HTTP receiver → enricher (targets from discovery → relabel) → writer or
/// directory.
#[derive(Debug)]
pub struct ReceiveEnrichWrite {
    /// The server: its address is [`ServerHandle::local_addr`]; the pipeline's first stage.
    pub server: ServerHandle,
    /// The enricher, for its metrics and target count.
    pub enricher: Arc<Enricher>,
    /// Counts what was handed to the output.
    pub sent: Arc<Counting>,
    feed: FeedHandle,
}

impl ReceiveEnrichWrite {
    /// Binds the server and starts the pipeline on the current tokio runtime.
    pub fn start(
        receive: pyro_receive::ReceiveConfig,
        discovery: ProcessDiscoveryConfig,
        rules: &[RelabelConfig],
        enrich: EnrichConfig,
        output: Output,
        registry: &mut Registry,
    ) -> Result<Self, BoxError> {
        let out: DynReceiver = match output {
            Output::Write(config) => {
                let (writer, run) = Writer::builder(config)
                    .with_metrics(WriteMetrics::register(registry))
                    .build()?;
                tokio::spawn(run);
                writer
            }
            Output::Directory(dir) => Arc::new(SinkReceiver::new(FileSink::new(dir)?)),
        };
        let sent = Arc::new(Counting::new(out));
        let enricher = Arc::new(
            Enricher::new(enrich, vec![sent.clone()])?
                .with_metrics(EnrichMetrics::register(registry)),
        );
        let targets = discover_processes(discovery, rules)?;
        let (feed, run) = feed(&targets, [enricher.clone() as _]);
        tokio::spawn(run);
        let (server, serve) = Server::new(receive, vec![enricher.clone()])
            .with_metrics(ReceiveMetrics::register(registry))
            .bind()?;
        tokio::spawn(serve);
        Ok(Self {
            server,
            enricher,
            sent,
            feed,
        })
    }

    /// Stops discovery, then shuts the server down: it answers the requests in flight and shuts
    /// the enricher and the output down, which deliver what they hold (all before `deadline`).
    pub async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.feed.stop();
        self.server.shutdown(deadline).await
    }
}
