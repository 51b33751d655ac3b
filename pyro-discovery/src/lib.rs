//! Where targets come from and how they are reshaped: process discovery (Alloy's
//! `discovery.process`), Prometheus relabelling (`discovery.relabel`, and `pyroscope.relabel`
//! for profile labels) and static lists.
//!
//! In the data path, discovery is the first stage: a [`Discoverer`](pyro_core::Discoverer)
//! yields target sets, a [`RelabelDiscoverer`](relabel::RelabelDiscoverer) reshapes them, and
//! the eBPF collector and the enricher consume them.
//!
//! ```text
//!  ProcessDiscoverer / StaticDiscoverer ──▶ RelabelDiscoverer ──▶ collector, pyro_enrich::Enricher
//! ```
//!
//! - [`process`]: targets from `/proc` ([`process::ProcessDiscoverer`], one-shot
//!   [`process::scan`]), merged with other targets by container id ([`process::join`]), and the
//!   cgroup → container id rule ([`process::container_id_from_cgroup`]).
//! - [`relabel`]: the relabel engine ([`relabel::RelabelRules`]) with every Prometheus action,
//!   as a discoverer wrapper and as a profile [`Receiver`](pyro_core::Receiver)
//!   ([`relabel::RelabelReceiver`]).
//! - Static targets: [`pyro_core::StaticDiscoverer`], re-exported here.
//!
//! ```
//! use futures_util::StreamExt;
//! use pyro_core::{Discoverer, Labels, Target};
//! use pyro_discovery::relabel::{RelabelConfig, RelabelDiscoverer, RelabelRules};
//! use pyro_discovery::StaticDiscoverer;
//!
//! // Rules as a host would load them from its configuration.
//! let rules: Vec<RelabelConfig> = serde_json::from_str(r#"[
//!     {"source_labels": ["__meta_process_exe"], "regex": ".*/(.*)", "target_label": "service_name"},
//!     {"action": "labeldrop", "regex": "__meta_process_cwd"}
//! ]"#).unwrap();
//! let rules = RelabelRules::new(&rules).unwrap();
//!
//! let source = StaticDiscoverer::new(vec![Target::new(Labels::from_iter([
//!     ("__process_pid__", "42"),
//!     ("__meta_process_exe", "/usr/sbin/nginx"),
//!     ("__meta_process_cwd", "/"),
//! ]))]);
//! let targets = RelabelDiscoverer::new(source, rules);
//! let first = futures_executor::block_on(targets.subscribe().next()).unwrap();
//! assert_eq!(first[0].labels().get("service_name"), Some("nginx"));
//! assert_eq!(first[0].labels().get("__meta_process_cwd"), None);
//! ```
#![deny(missing_docs)]

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
#[cfg(any(feature = "docker", feature = "kubernetes"))]
mod label_name;
pub mod process;
pub mod relabel;

pub use pyro_core::StaticDiscoverer;
