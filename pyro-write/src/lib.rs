//! Pushes profiles to Grafana Pyroscope, as Alloy's `pyroscope.write` does: the end of a pyro
//! pipeline.
//!
//! ```text
//!  collector / enricher / HTTP receiver ──Profile──▶ Writer ──queue──▶ PushSink ──▶ Pyroscope
//!                                                       └────queue──▶ PushSink ──▶ Pyroscope #2
//! ```
//!
//! - [`Writer`] is a [`Receiver`](pyro_core::Receiver). It owns the label policy (drop `__`
//!   labels except `__name__`/`__delta__`, apply `external_labels`, validate) and, per endpoint,
//!   a bounded queue, a worker and the retry policy. A dead endpoint never delays a healthy one,
//!   and memory stays within the queue limits however long an endpoint is down.
//! - Before queueing, every profile is checked against Pyroscope's ingest limits
//!   ([`WriterConfig::limits`], [`pyro_core::limits`]): one Pyroscope would refuse with 400 is
//!   refused here, counted by rule (`pyroscope_write_dropped_profiles_total{endpoint="-"}`),
//!   logged once per rule and never sent or retried.
//! - [`PushSink`] is one endpoint, a [`Sink`](pyro_core::Sink): Connect `Push`
//!   (`POST {url}/push.v1.PusherService/Push`, `application/proto`, `Connect-Protocol-Version: 1`,
//!   gzip request body) over a pooled keep-alive hyper client, rustls for `https`, auth and
//!   tenant headers. It makes one attempt and classifies the failure ([`PushError`] with the
//!   server's Connect code and message).
//! - [`proto`] holds the four push messages, hand-written with prost.
//! - Configuration ([`WriterConfig`], [`EndpointConfig`]) uses Alloy's argument names and
//!   defaults; secrets are [`Secret`]s and never appear in `Debug` output.
//! - Metrics ([`WriteMetrics`]) are Alloy's `pyroscope_write_*` families plus queue gauges.
//!
//! ```no_run
//! use std::time::Duration;
//! use prometheus_client::registry::Registry;
//! use pyro_core::{Labels, Profile, Receiver};
//! use pyro_write::{EndpointConfig, WriteMetrics, Writer, WriterConfig};
//!
//! # async fn run(pprof: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::default();
//! let mut config = WriterConfig::default();
//! config.external_labels.insert("cluster".into(), "eu-1".into());
//! let mut endpoint = EndpointConfig::new("http://localhost:4040");
//! endpoint.tenant_id = Some("team-a".into());
//! config.endpoints.push(endpoint);
//!
//! let (writer, run) = Writer::builder(config)
//!     .with_metrics(WriteMetrics::register(&mut registry))
//!     .build()?;
//! tokio::spawn(run);
//! let labels = Labels::from_iter([("__name__", "process_cpu"), ("service_name", "api")]);
//! writer.append(Profile::new(labels, pprof)).await?;
//! // Delivers what is queued (at most 5 s), then stops the workers.
//! writer.shutdown(std::time::Instant::now() + Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

/// The Push API messages, from [`pyro_core::push`].
pub use pyro_core::push as proto;

mod config;
mod endpoint;
mod error;
mod metrics;
mod tls;
mod writer;

pub use config::{
    AppendMode, BasicAuth, Compression, EndpointConfig, FullPolicy, QueueConfig, RetryPolicy,
    Secret, TlsConfig, WriterConfig,
};
pub use endpoint::{PUSH_PATH, PushSink, TENANT_HEADER};
pub use error::{ConfigError, ConnectCode, DeliveryError, DropReason, PushError};
pub use metrics::{DropLabels, EndpointLabel, LatencyLabels, WriteMetrics};
pub use writer::{EndpointStats, SinkSpec, Writer, WriterBuilder};
