//! Adds discovery labels to profiles that arrive from elsewhere: Alloy's `pyroscope.enrich`.
//!
//! Profiles pushed to a host (by SDKs through `pyro-receive`, say) carry their own labels only.
//! The [`Enricher`] sits in the receiver chain, looks each profile up in the latest target set
//! from discovery by one label (an IP, a pod name, a container id), copies the matching
//! target's labels onto the profile and forwards it:
//!
//! ```text
//!  Discoverer ──targets──▶ Enricher::set_targets / run_updates
//!  receive_http ──Profile──▶ Enricher ──Profile + target labels──▶ forward_to (Fanout) ──▶ write
//! ```
//!
//! Rules (Alloy's `enrich.go`):
//! - the profile's value of `profiles_match_label` (default: `target_match_label`) is looked up
//!   among the targets' values of `target_match_label`, by exact string equality;
//! - on a match, the target's labels named in `labels_to_copy` (all of them when it is empty,
//!   `__meta_*` included) are copied onto the profile, overwriting labels it already has; names
//!   the target lacks are ignored;
//! - a profile without the match label, or whose value matches no target, is forwarded
//!   unchanged;
//! - targets without the match label are skipped; when several targets share a value, the
//!   **last one wins**;
//! - the enricher is ready at once: until targets arrive, every profile passes through.
//!
//! Target updates build a new index and swap it in atomically ([`arc_swap`]); appends read the
//! current index without locking and never wait for a rebuild, and no lock is held across an
//! `await`. The pprof payload is never touched or copied.
//!
//! ```
//! use std::sync::Arc;
//! use pyro_core::{DynReceiver, Labels, Profile, Receiver, Target};
//! use pyro_enrich::{EnrichConfig, Enricher};
//! # #[derive(Debug, Default)] struct Keep(std::sync::Mutex<Vec<Profile>>);
//! # #[pyro_core::async_trait] impl Receiver for Keep {
//! #     async fn append(&self, p: Profile) -> Result<(), pyro_core::AppendError> {
//! #         self.0.lock().unwrap().push(p); Ok(())
//! #     }
//! # }
//!
//! let out = Arc::new(Keep::default());
//! let enricher = Enricher::new(
//!     EnrichConfig {
//!         target_match_label: "__meta_kubernetes_pod_ip".into(),
//!         profiles_match_label: Some("pod_ip".into()),
//!         labels_to_copy: vec!["namespace".into(), "pod".into()],
//!     },
//!     vec![out.clone() as DynReceiver],
//! )
//! .unwrap();
//! enricher.set_targets(&[Target::new(Labels::from_iter([
//!     ("__meta_kubernetes_pod_ip", "10.0.0.7"),
//!     ("namespace", "shop"),
//!     ("pod", "cart-7d9f"),
//! ]))]);
//!
//! let profile = Profile::new(
//!     Labels::from_iter([("__name__", "process_cpu"), ("pod_ip", "10.0.0.7")]),
//!     &b"pprof bytes"[..],
//! );
//! futures_executor::block_on(enricher.append(profile)).unwrap();
//! let seen = out.0.lock().unwrap();
//! assert_eq!(seen[0].labels.get("namespace"), Some("shop"));
//! assert_eq!(seen[0].labels.get("pod"), Some("cart-7d9f"));
//! ```
#![deny(missing_docs)]

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use pyro_core::{
    AppendError, DynReceiver, Fanout, Labels, Profile, Receiver, Target, TargetStream, async_trait,
};
use serde::{Deserialize, Serialize};

pub use arc_swap;

/// Arguments of the enricher (Alloy's `pyroscope.enrich`, without `targets` and `forward_to`,
/// which are runtime objects: see [`Enricher::set_targets`] and [`Enricher::new`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// The target label whose value identifies a target (required).
    pub target_match_label: String,
    /// The profile label to match with; `None` means `target_match_label`.
    #[serde(default)]
    pub profiles_match_label: Option<String>,
    /// Target labels to copy; empty copies all of them.
    #[serde(default)]
    pub labels_to_copy: Vec<String>,
}

impl EnrichConfig {
    /// The profile label matched against targets.
    pub fn profiles_match_label(&self) -> &str {
        self.profiles_match_label
            .as_deref()
            .filter(|l| !l.is_empty())
            .unwrap_or(&self.target_match_label)
    }
}

/// The configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnrichError {
    /// `target_match_label` is empty.
    #[error("target_match_label is required")]
    MissingTargetMatchLabel,
}

/// Counters of an [`Enricher`].
#[derive(Debug, Clone, Default)]
pub struct EnrichMetrics {
    enriched: Counter,
    unmatched: Counter,
    targets: Gauge,
}

impl EnrichMetrics {
    /// Creates the metrics and registers them: `pyroscope_enrich_profiles_enriched_total`,
    /// `pyroscope_enrich_profiles_unmatched_total` (no match label, or no target with its value)
    /// and `pyroscope_enrich_targets` (targets in the current index).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_enrich_profiles_enriched",
            "Profiles that matched a target and received its labels",
            m.enriched.clone(),
        );
        registry.register(
            "pyroscope_enrich_profiles_unmatched",
            "Profiles forwarded unchanged: no match label or no matching target",
            m.unmatched.clone(),
        );
        registry.register(
            "pyroscope_enrich_targets",
            "Distinct match values in the current target index",
            m.targets.clone(),
        );
        m
    }

    /// Profiles enriched so far.
    pub fn enriched(&self) -> u64 {
        self.enriched.get()
    }

    /// Profiles passed through unmatched so far.
    pub fn unmatched(&self) -> u64 {
        self.unmatched.get()
    }
}

/// One immutable generation of the lookup table.
#[derive(Debug, Default)]
struct Index {
    /// Match value → the labels to copy (already filtered by `labels_to_copy`).
    by_value: HashMap<String, Labels>,
}

/// Enriches profiles with the labels of the discovered target they match, then forwards them.
/// See the [crate documentation](crate) for the rules.
#[derive(Debug)]
pub struct Enricher {
    config: EnrichConfig,
    profiles_match_label: String,
    index: ArcSwap<Index>,
    forward: Fanout,
    metrics: EnrichMetrics,
}

impl Enricher {
    /// An enricher with no targets yet, forwarding to `forward_to` (through a [`Fanout`]).
    pub fn new(config: EnrichConfig, forward_to: Vec<DynReceiver>) -> Result<Self, EnrichError> {
        Self::with_fanout(config, Fanout::new(forward_to))
    }

    /// Like [`Enricher::new`], with a ready-made [`Fanout`] (named children, metrics).
    pub fn with_fanout(config: EnrichConfig, forward: Fanout) -> Result<Self, EnrichError> {
        if config.target_match_label.is_empty() {
            return Err(EnrichError::MissingTargetMatchLabel);
        }
        Ok(Self {
            profiles_match_label: config.profiles_match_label().to_owned(),
            config,
            index: ArcSwap::from_pointee(Index::default()),
            forward,
            metrics: EnrichMetrics::default(),
        })
    }

    /// Uses these metrics (from [`EnrichMetrics::register`]).
    #[must_use]
    pub fn with_metrics(mut self, metrics: EnrichMetrics) -> Self {
        metrics.targets.set(self.index.load().by_value.len() as i64);
        self.metrics = metrics;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EnrichConfig {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &EnrichMetrics {
        &self.metrics
    }

    /// Replaces the target set. The new index is built on the caller's thread and swapped in
    /// atomically: appends running meanwhile use the previous index, never a partial one.
    /// Targets without the match label are skipped; of several targets with the same value,
    /// the last one wins.
    pub fn set_targets(&self, targets: &[Target]) {
        let match_label = self.config.target_match_label.as_str();
        let mut by_value = HashMap::with_capacity(targets.len());
        let mut skipped = 0usize;
        for t in targets {
            let Some(value) = t.labels().get_non_empty(match_label) else {
                skipped += 1;
                continue;
            };
            let copy = if self.config.labels_to_copy.is_empty() {
                t.labels().clone()
            } else {
                self.config
                    .labels_to_copy
                    .iter()
                    .filter_map(|name| Some((name.as_str(), t.labels().get_non_empty(name)?)))
                    .collect()
            };
            by_value.insert(value.to_owned(), copy);
        }
        let len = by_value.len();
        self.index.store(Arc::new(Index { by_value }));
        self.metrics.targets.set(len as i64);
        tracing::debug!(
            targets = targets.len(),
            indexed = len,
            skipped,
            match_label,
            "Enrichment targets updated."
        );
    }

    /// Number of distinct match values in the current index.
    pub fn target_count(&self) -> usize {
        self.index.load().by_value.len()
    }

    /// Feeds the enricher from a discoverer's stream until it ends: each target set replaces
    /// the index. Run it as a task next to the pipeline:
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use pyro_core::Discoverer;
    /// # async fn f(enricher: Arc<pyro_enrich::Enricher>, discovery: impl Discoverer) {
    /// let feeder = Arc::clone(&enricher);
    /// let stream = discovery.subscribe();
    /// tokio::spawn(async move { feeder.run_updates(stream).await });
    /// # }
    /// ```
    pub async fn run_updates(&self, mut targets: TargetStream) {
        while let Some(set) = targets.next().await {
            self.set_targets(&set);
        }
        tracing::debug!("Enrichment target stream ended; keeping the last set.");
    }

    /// Enriches `labels` in place with the current index, without forwarding: `true` when a
    /// target matched.
    pub fn enrich(&self, labels: &mut Labels) -> bool {
        let Some(value) = labels.get_non_empty(&self.profiles_match_label) else {
            return false;
        };
        // `load` is wait-free and the guard is dropped before anything awaits.
        let index = self.index.load();
        let Some(copy) = index.by_value.get(value) else {
            return false;
        };
        labels.merge(copy);
        true
    }
}

#[async_trait]
impl Receiver for Enricher {
    async fn append(&self, mut profile: Profile) -> Result<(), AppendError> {
        if self.enrich(&mut profile.labels) {
            self.metrics.enriched.inc();
        } else {
            self.metrics.unmatched.inc();
        }
        self.forward.append(profile).await
    }

    /// Flushes the receivers it forwards to.
    async fn flush(&self, deadline: std::time::Instant) -> Result<(), pyro_core::LifecycleError> {
        self.forward.flush(deadline).await
    }

    /// Shuts down the receivers it forwards to (the enricher holds nothing itself).
    async fn shutdown(
        &self,
        deadline: std::time::Instant,
    ) -> Result<(), pyro_core::LifecycleError> {
        self.forward.shutdown(deadline).await
    }
}

/// Discovered targets replace the index ([`Enricher::set_targets`]), so
/// [`pyro_core::discoverer::feed`] can drive an enricher.
impl pyro_core::TargetConsumer for Enricher {
    fn set_targets(&self, targets: Vec<Target>) {
        Enricher::set_targets(self, &targets);
    }
}
