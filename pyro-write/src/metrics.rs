//! Writer metrics, named like Alloy's `pyroscope_write_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: the endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The endpoint's name (its URL unless named).
    pub endpoint: String,
}

/// Labels: the endpoint and why a profile was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// The endpoint's name (`-` for drops before any endpoint, such as invalid labels).
    pub endpoint: String,
    /// The [`DropReason`](crate::DropReason).
    pub reason: String,
}

/// Labels: the endpoint and what the latency measures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// The endpoint's name.
    pub endpoint: String,
    /// `push_endpoint` (one successful HTTP attempt) or `push_total` (from `append` to
    /// delivery, retries and queueing included).
    pub r#type: String,
}

/// The writer's metrics. `WriteMetrics::default()` records without exporting;
/// [`WriteMetrics::register`] exports them through the host's registry.
#[derive(Clone, Debug)]
pub struct WriteMetrics {
    pub(crate) sent_bytes: Family<EndpointLabel, Counter>,
    pub(crate) sent_profiles: Family<EndpointLabel, Counter>,
    pub(crate) dropped_bytes: Family<DropLabels, Counter>,
    pub(crate) dropped_profiles: Family<DropLabels, Counter>,
    pub(crate) retries: Family<EndpointLabel, Counter>,
    pub(crate) latency: Family<LatencyLabels, Histogram>,
    pub(crate) queue_bytes: Family<EndpointLabel, Gauge>,
    pub(crate) queue_profiles: Family<EndpointLabel, Gauge>,
}

impl Default for WriteMetrics {
    fn default() -> Self {
        Self {
            sent_bytes: Family::default(),
            sent_profiles: Family::default(),
            dropped_bytes: Family::default(),
            dropped_profiles: Family::default(),
            retries: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 20))
            }),
            queue_bytes: Family::default(),
            queue_profiles: Family::default(),
        }
    }
}

impl WriteMetrics {
    /// Creates the metrics and registers them:
    ///
    /// | metric | labels |
    /// |---|---|
    /// | `pyroscope_write_sent_bytes_total` (pprof bytes delivered) | `endpoint` |
    /// | `pyroscope_write_sent_profiles_total` | `endpoint` |
    /// | `pyroscope_write_dropped_bytes_total` | `endpoint`, `reason` |
    /// | `pyroscope_write_dropped_profiles_total` | `endpoint`, `reason` |
    /// | `pyroscope_write_retries_total` | `endpoint` |
    /// | `pyroscope_write_latency_seconds` (histogram) | `endpoint`, `type` |
    /// | `pyroscope_write_queue_bytes` (gauge, bytes held) | `endpoint` |
    /// | `pyroscope_write_queue_profiles` (gauge, profiles held) | `endpoint` |
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_write_sent_bytes",
            "Bytes of pprof payload delivered",
            m.sent_bytes.clone(),
        );
        registry.register(
            "pyroscope_write_sent_profiles",
            "Profiles delivered",
            m.sent_profiles.clone(),
        );
        registry.register(
            "pyroscope_write_dropped_bytes",
            "Bytes of pprof payload dropped, by reason",
            m.dropped_bytes.clone(),
        );
        registry.register(
            "pyroscope_write_dropped_profiles",
            "Profiles dropped, by reason",
            m.dropped_profiles.clone(),
        );
        registry.register(
            "pyroscope_write_retries",
            "Push attempts that were retried",
            m.retries.clone(),
        );
        registry.register(
            "pyroscope_write_latency_seconds",
            "Push latency: one attempt (push_endpoint) or append to delivery (push_total)",
            m.latency.clone(),
        );
        registry.register(
            "pyroscope_write_queue_bytes",
            "Bytes held for an endpoint (queued, in flight or waiting to be retried)",
            m.queue_bytes.clone(),
        );
        registry.register(
            "pyroscope_write_queue_profiles",
            "Profiles held for an endpoint (queued, in flight or waiting to be retried)",
            m.queue_profiles.clone(),
        );
        m
    }
}
