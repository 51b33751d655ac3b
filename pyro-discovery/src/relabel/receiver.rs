//! [`RelabelReceiver`]: relabelling of profile labels in a receiver chain (`pyroscope.relabel`).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use pyro_core::{AppendError, DynReceiver, Profile, Receiver, async_trait};

use super::RelabelRules;

/// Counters of a [`RelabelReceiver`].
#[derive(Debug, Clone, Default)]
pub struct RelabelMetrics {
    processed: Counter,
    dropped: Counter,
}

impl RelabelMetrics {
    /// Creates the counters and registers them as `pyroscope_relabel_profiles_processed_total`
    /// and `pyroscope_relabel_profiles_dropped_total`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_relabel_profiles_processed",
            "Profiles the relabel rules were applied to",
            m.processed.clone(),
        );
        registry.register(
            "pyroscope_relabel_profiles_dropped",
            "Profiles a relabel rule dropped",
            m.dropped.clone(),
        );
        m
    }

    /// Profiles processed so far.
    pub fn processed(&self) -> u64 {
        self.processed.get()
    }

    /// Profiles dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// A [`Receiver`] that applies [`RelabelRules`] to each profile's labels and forwards it, or
/// drops it (successfully: a dropped profile is not an error) when a rule says so. The pprof
/// payload is not touched.
///
/// ```
/// use std::sync::Arc;
/// use pyro_core::{DynReceiver, Fanout, Labels, Profile, Receiver};
/// use pyro_discovery::relabel::{RelabelConfig, RelabelReceiver, RelabelRules};
///
/// let rules = RelabelRules::new(&[RelabelConfig {
///     source_labels: vec!["service_name".into()],
///     target_label: "app".into(),
///     ..Default::default()
/// }])
/// .unwrap();
/// let next: DynReceiver = Arc::new(Fanout::new([]));
/// let relabel = RelabelReceiver::new(rules, next);
/// let profile = Profile::new(Labels::from_iter([("service_name", "api")]), &b""[..]);
/// futures_executor::block_on(relabel.append(profile)).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RelabelReceiver {
    rules: Arc<RelabelRules>,
    next: DynReceiver,
    metrics: RelabelMetrics,
}

impl RelabelReceiver {
    /// Relabels and forwards to `next`.
    pub fn new(rules: impl Into<Arc<RelabelRules>>, next: DynReceiver) -> Self {
        Self {
            rules: rules.into(),
            next,
            metrics: RelabelMetrics::default(),
        }
    }

    /// Uses these counters (from [`RelabelMetrics::register`]).
    #[must_use]
    pub fn with_metrics(mut self, metrics: RelabelMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The counters.
    pub fn metrics(&self) -> &RelabelMetrics {
        &self.metrics
    }
}

#[async_trait]
impl Receiver for RelabelReceiver {
    async fn append(&self, mut profile: Profile) -> Result<(), AppendError> {
        self.metrics.processed.inc();
        if !self.rules.process(&mut profile.labels) {
            self.metrics.dropped.inc();
            tracing::trace!(labels = %profile.labels, "Relabel rule dropped a profile.");
            return Ok(());
        }
        self.next.append(profile).await
    }

    async fn flush(&self, deadline: std::time::Instant) -> Result<(), pyro_core::LifecycleError> {
        self.next.flush(deadline).await
    }

    async fn shutdown(
        &self,
        deadline: std::time::Instant,
    ) -> Result<(), pyro_core::LifecycleError> {
        self.next.shutdown(deadline).await
    }
}
