//! [`ReceiveMetrics`]: what the server counts, registered in the host's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metric labels naming an endpoint (`push`, `ingest`, `other`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The endpoint.
    pub endpoint: String,
}

/// Metric labels of one answered request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The endpoint.
    pub endpoint: String,
    /// The HTTP status code sent.
    pub status_code: String,
}

/// Metric labels of a profile refused by an ingest limit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// The endpoint.
    pub endpoint: String,
    /// The rule broken ([`pyro_core::limits::Rule`]).
    pub reason: String,
}

/// The server's metrics. Cheap to clone (shared counters); the default is unregistered.
#[derive(Debug, Clone)]
pub struct ReceiveMetrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: Family<EndpointLabels, Histogram>,
    pub(crate) received_bytes: Family<EndpointLabels, Counter>,
    pub(crate) profiles_forwarded: Family<EndpointLabels, Counter>,
    pub(crate) profiles_refused: Family<RefusedLabels, Counter>,
    pub(crate) connections: Gauge,
    pub(crate) connections_limit: Gauge,
}

impl Default for ReceiveMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
            }),
            received_bytes: Family::default(),
            profiles_forwarded: Family::default(),
            profiles_refused: Family::default(),
            connections: Gauge::default(),
            connections_limit: Gauge::default(),
        }
    }
}

impl ReceiveMetrics {
    /// Creates the metrics and registers them under the `pyroscope_receive_http_` prefix:
    /// `requests_total{endpoint,status_code}`, `request_duration_seconds{endpoint}`,
    /// `received_bytes_total{endpoint}` (request bodies as sent, before decompression),
    /// `profiles_forwarded_total{endpoint}`, `profiles_refused_total{endpoint,reason}` (by the
    /// ingest limits, `reason` the rule), `tcp_connections` and `tcp_connections_limit`
    /// (Alloy's names for the last two).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("pyroscope_receive_http");
        r.register(
            "requests",
            "Requests answered, by endpoint and HTTP status code",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request headers to response, by endpoint",
            m.duration.clone(),
        );
        r.register(
            "received_bytes",
            "Request body bytes read (as sent, before decompression), by endpoint",
            m.received_bytes.clone(),
        );
        r.register(
            "profiles_forwarded",
            "Profiles every receiver accepted, by endpoint",
            m.profiles_forwarded.clone(),
        );
        r.register(
            "profiles_refused",
            "Profiles refused by an ingest limit, by endpoint and rule",
            m.profiles_refused.clone(),
        );
        r.register(
            "tcp_connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "tcp_connections_limit",
            "The most client connections served at once",
            m.connections_limit.clone(),
        );
        m
    }
}
