//! The vocabulary every pyro crate shares: labels, targets, profiles, the three traits that
//! carry data through a pipeline, and the pprof codec.
//!
//! pyro profiles a Linux host with eBPF and ships the profiles to Grafana Pyroscope, the way
//! Grafana Alloy's `pyroscope.*` components do, as crates a host composes in plain Rust:
//!
//! ```text
//!  Discoverer ──targets──▶ (relabel) ──▶ eBPF collector ──Profile──▶ Receiver ──▶ … ──▶ Sink
//! ```
//!
//! - [`Labels`] and [`Target`]: label sets, with the checks Pyroscope applies at ingest.
//! - [`Profile`]: the labels of a series plus a pprof payload.
//! - [`Receiver`]: accepts profiles (the enricher, [`Fanout`], the Pyroscope writer, a directory).
//! - [`Discoverer`]: yields target sets (process discovery, static lists, relabelling).
//! - [`Sink`]: moves a profile's bytes to one destination.
//! - [`pprof`]: pprof message types, [`pprof::ProfileBuilder`], and a size-capped decoder.
//! - [`push`]: the messages of Pyroscope's `Push` API.
//!
//! This crate has no runtime: no tokio, no threads, no global state.
//!
//! ```
//! use std::sync::Arc;
//! use pyro_core::pprof::{ProfileBuilder, encode_gzip, decode, DEFAULT_MAX_DECODED_SIZE};
//! use pyro_core::{DynReceiver, Fanout, Labels, Profile, Receiver};
//!
//! # #[derive(Debug)] struct Discard;
//! # #[pyro_core::async_trait] impl Receiver for Discard {
//! #     async fn append(&self, _: Profile) -> Result<(), pyro_core::AppendError> { Ok(()) }
//! # }
//! // Build a CPU profile with one stack…
//! let mut builder = ProfileBuilder::cpu(97);
//! builder.add_folded(&["myapp", "main", "busy"], &[builder.period()]);
//! let pprof = encode_gzip(&builder.build(), 1);
//! assert_eq!(decode(&pprof, DEFAULT_MAX_DECODED_SIZE).unwrap().sample.len(), 1);
//!
//! // …label it, check it is sendable, and hand it to the receivers.
//! let labels = Labels::from_iter([("__name__", "process_cpu"), ("service_name", "myapp")]);
//! labels.validate().unwrap();
//! let receivers = Fanout::new([Arc::new(Discard) as DynReceiver]);
//! futures_executor::block_on(receivers.append(Profile::new(labels, pprof))).unwrap();
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cgroup;
pub mod config;
pub mod connect;
pub mod discoverer;
pub mod fanout;
pub mod labels;
pub mod lifecycle;
pub mod limits;
pub mod pprof;
pub mod proc;
pub mod profile;
pub mod push;
pub mod receiver;
pub mod rootfs;
pub mod sink;
pub mod target;

pub use async_trait::async_trait;
pub use connect::ConnectCode;
pub use discoverer::{Discoverer, StaticDiscoverer, TargetConsumer, TargetStream, feed};
pub use fanout::{Fanout, FanoutMetrics};
pub use labels::{Label, LabelError, Labels};
pub use lifecycle::{LifecycleError, SharedShutdown, Stage, StopSignal};
pub use profile::Profile;
pub use receiver::{AppendError, AppendErrorKind, BoxError, DynReceiver, Receiver};
pub use sink::{Sink, SinkError, SinkErrorKind, SinkReceiver};
pub use target::Target;
