//! An HTTP server that accepts the profiles Pyroscope SDKs and agents push, and forwards each
//! one as a [`pyro_core::Profile`] to receivers: what Grafana Alloy's
//! `pyroscope.receive_http` does, as a future the host runs on its own tokio runtime.
//!
//! ```text
//!  SDKs, agents, other Alloys ──HTTP──▶ Server ──Profile──▶ Fanout ──▶ enricher / writer / file
//!  (Push, /ingest)                      (this crate)
//! ```
//!
//! - `POST /push.v1.PusherService/Push`: Connect unary, `application/proto` or
//!   `application/json`, request `Content-Encoding: gzip` or identity ([`push`]).
//! - `POST /ingest`: the legacy API: pprof (raw or multipart), `folded` and `lines` text,
//!   converted to pprof ([`ingest`]).
//! - Labels: reserved `__` labels are dropped except `__name__`/`__delta__`, then checked with
//!   [`pyro_core::Labels::validate`]; Alloy's `ensureServiceName` quirk is not copied
//!   ([`labels`] says why and what happens instead).
//! - Pyroscope's ingest limits ([`limits`], configured in [`ReceiveConfig::limits`]): a profile
//!   Pyroscope would refuse (decompressed size, sample counts, ingestion window, sample type
//!   names, label counts after sample labels are promoted, label lengths) gets 400
//!   `invalid_argument` naming the rule; the other profiles of the request are forwarded, as
//!   Pyroscope stores them.
//! - Errors are Connect's JSON `{"code","message"}` ([`RequestError`]); bad input is never
//!   reported as a downstream failure, and downstream failures keep their kind.
//! - Limits: body size, decompressed size (gzip bombs stop there), a byte budget for bodies
//!   being read (taken as bytes arrive, so slow clients hold only what they sent), requests
//!   parsed at once, connections, header and body read timeouts (slowloris clients are cut);
//!   [`ServerHandle::shutdown`] lets in-flight requests finish ([`ReceiveConfig`]).
//! - Metrics in the host's `prometheus_client` registry ([`ReceiveMetrics`]).
//!
//! Where it deliberately differs from Pyroscope and Alloy:
//!
//! | situation | Pyroscope / Alloy | here |
//! |---|---|---|
//! | `raw_profile` is not a pprof (bad protobuf, broken gzip) | Pyroscope: `unknown` 500, so clients retry garbage | `invalid_argument` 400 naming the series and sample |
//! | forwarding fails | Alloy: always `internal` 500 | the [`pyro_core::AppendErrorKind`]: bad input 400, `unavailable` 503, `resource_exhausted` 429, `internal` 500 |
//! | body over the limit | Pyroscope Push: `resource_exhausted` 429 (retried); Alloy: no limit | 413 with `invalid_argument` (not retried) |
//! | `/ingest` with `format=jfr`, `trie`, `tree`, `speedscope` | parsed | 415 naming the supported formats |
//! | `/ingest` with an unknown `format` | parsed as folded | 400 |
//! | multipart `/ingest` without a `profile` part | 200, nothing stored | 400 |
//! | `Content-Encoding: gzip` on `/ingest` | not decoded | decoded (capped) |
//! | Push series without `service_name` | Alloy: `service_name = __name__` (`process_cpu`) | `service_name = unknown_service`, as Pyroscope's distributor |
//! | Push series with `service_name` | Alloy: adds `app_name = __name__` | left as sent |
//! | `/ingest` name with a `profile_id` label | Pyroscope: dropped silently, 200 | forwarded like any label |
//! | `/ingest` brace label `__session_id__` | Pyroscope: kept | dropped, like every `__` label but `__name__`/`__delta__` |
//! | `/ingest` pprof breaking an ingest limit | Pyroscope: 422 `unknown` | 400 `invalid_argument` naming the rule, as on Push |
//! | `:` in a sample type, unit or period type | Pyroscope: stored, but its profile-type id cannot be selected | 400 `invalid_argument` (rule `malformed_profile`) |
//!
//! Not served: gRPC and gRPC-Web on the Push path (HTTP/2), the debug-info upload service,
//! TLS, and tenants (`X-Scope-OrgID` is not read; put a tenant-aware receiver downstream).
//!
//! ```
//! use std::sync::Arc;
//! use pyro_core::{AppendError, DynReceiver, Profile, Receiver};
//! use pyro_receive::{HttpConfig, ReceiveConfig, Server};
//!
//! #[derive(Debug)]
//! struct Print;
//! #[pyro_core::async_trait]
//! impl Receiver for Print {
//!     async fn append(&self, p: Profile) -> Result<(), AppendError> {
//!         println!("{} ({} bytes)", p.labels, p.raw.len());
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let config = ReceiveConfig {
//!     http: HttpConfig { listen_address: "127.0.0.1".into(), listen_port: 0, ..HttpConfig::default() },
//!     ..ReceiveConfig::default()
//! };
//! let (handle, serve) = Server::new(config, vec![Arc::new(Print) as DynReceiver]).bind()?;
//! let server = tokio::spawn(serve);
//! println!("push to http://{}/push.v1.PusherService/Push", handle.local_addr());
//! // … later:
//! // Answers the requests in flight, then shuts down what it forwards to.
//! handle.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(5)).await?;
//! server.await??;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod error;
pub mod ingest;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod push;
mod server;

pub use error::{Code, RequestError, ServeError};
pub use metrics::ReceiveMetrics;
pub use server::{HttpConfig, ReceiveConfig, Server, ServerHandle, decode_content_encoding};
