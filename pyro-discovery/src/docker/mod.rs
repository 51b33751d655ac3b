//! `discovery.docker`: targets from the Docker Engine API, with Prometheus's labels.
//!
//! [`DockerDiscoverer`] lists the daemon's running containers (`GET /containers/json`, with
//! the configured filters) and networks (`GET /networks`) every `refresh_interval` and turns
//! them into targets exactly as Prometheus's `docker_sd_config` (and so Alloy's
//! `discovery.docker`) does:
//!
//! | Label | Value |
//! |---|---|
//! | `__meta_docker_container_id` | the container's id, which [`pyro_core::Target::container_id`] matches against the id in `/proc/<pid>/cgroup` |
//! | `__meta_docker_container_name` | its first name, with Docker's leading `/` (`service_name` inference drops it) |
//! | `__meta_docker_container_image`, `__meta_docker_container_image_id` | the image as the container was created from it, and its id (when not empty) |
//! | `__meta_docker_container_network_mode` | `HostConfig.NetworkMode` (`bridge`, `host`, a network's name, `container:<id>`) |
//! | `__meta_docker_container_label_<name>` | each container label, its name sanitized to `[a-zA-Z0-9_]` |
//! | `__meta_docker_network_{id,name,scope,internal,ingress}`, `__meta_docker_network_label_<name>` | the network of this target |
//! | `__meta_docker_network_ip` | the container's address on it (IPv4, else global IPv6) |
//! | `__meta_docker_port_private`, `__meta_docker_port_public`, `__meta_docker_port_public_ip` | the TCP port of this target, and where it is published |
//! | `__address__` | `<ip>:<private port>`; `<ip>:<port>` without TCP ports; `host_networking_host` in host mode |
//!
//! One target per TCP port and network (only the first network by name when
//! `match_first_network`, the default).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use pyro_core::Discoverer;
//! use pyro_discovery::docker::{DockerConfig, DockerDiscoverer};
//!
//! # async fn run() -> Result<(), pyro_discovery::docker::DockerError> {
//! let config: DockerConfig = serde_json::from_str(r#"{
//!     "host": "unix:///var/run/docker.sock",
//!     "refresh_interval": "15s",
//!     "filter": [{"name": "label", "values": ["profile=true"]}]
//! }"#).unwrap();
//! let docker = DockerDiscoverer::new(config)?;
//! let mut targets = docker.subscribe();
//! while let Some(set) = targets.next().await {
//!     println!("{} containers' targets", set.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Faults (daemon unreachable, an error status, an answer that does not decode) keep the last
//! good set, are counted in [`DockerMetrics`], logged once per distinct cause, and retried with
//! a backoff from one second up to `refresh_interval`.

mod config;
mod discoverer;
#[doc(hidden)]
pub mod fuzzing;
mod targets;

pub use config::{Authorization, BasicAuth, DockerConfig, Filter, TlsConfig};
pub use discoverer::{ApiErrorKind, DockerDiscoverer, DockerError, DockerMetrics};

#[cfg(test)]
mod tests;
