//! Prometheus's Docker target rules (`discovery/moby/docker.go`, `network.go`) as a pure
//! function of the Engine API's `GET /containers/json` and `GET /networks` answers.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use bollard::models::{ContainerSummary, EndpointSettings, Network, PortSummaryTypeEnum};
use pyro_core::{Labels, Target};

pub(crate) use crate::label_name::sanitize as sanitize_label_name;

const CONTAINER_ID: &str = "__meta_docker_container_id";
const CONTAINER_NAME: &str = "__meta_docker_container_name";
const CONTAINER_IMAGE: &str = "__meta_docker_container_image";
const CONTAINER_IMAGE_ID: &str = "__meta_docker_container_image_id";
const CONTAINER_NETWORK_MODE: &str = "__meta_docker_container_network_mode";
const CONTAINER_LABEL_PREFIX: &str = "__meta_docker_container_label_";
const NETWORK_PREFIX: &str = "__meta_docker_network_";
const NETWORK_IP: &str = "__meta_docker_network_ip";
const PORT_PRIVATE: &str = "__meta_docker_port_private";
const PORT_PUBLIC: &str = "__meta_docker_port_public";
const PORT_PUBLIC_IP: &str = "__meta_docker_port_public_ip";
const ADDRESS: &str = "__address__";

/// The settings that shape targets (the rest of the config is about reaching the daemon).
#[derive(Debug, Clone)]
pub(crate) struct TargetRules {
    pub(crate) port: u16,
    pub(crate) host_networking_host: String,
    pub(crate) match_first_network: bool,
}

/// `__meta_docker_network_*` labels of each network, by network id.
fn network_labels(networks: &[Network]) -> HashMap<&str, Vec<(String, String)>> {
    networks
        .iter()
        .filter_map(|n| {
            let id = n.id.as_deref()?;
            let mut labels = vec![
                (format!("{NETWORK_PREFIX}id"), id.to_owned()),
                (
                    format!("{NETWORK_PREFIX}name"),
                    n.name.clone().unwrap_or_default(),
                ),
                (
                    format!("{NETWORK_PREFIX}scope"),
                    n.scope.clone().unwrap_or_default(),
                ),
                (
                    format!("{NETWORK_PREFIX}internal"),
                    n.internal.unwrap_or(false).to_string(),
                ),
                (
                    format!("{NETWORK_PREFIX}ingress"),
                    n.ingress.unwrap_or(false).to_string(),
                ),
            ];
            for (k, v) in n.labels.iter().flatten() {
                labels.push((
                    format!("{NETWORK_PREFIX}label_{}", sanitize_label_name(k)),
                    v.clone(),
                ));
            }
            Some((id, labels))
        })
        .collect()
}

/// A network's address as Prometheus takes it: the IPv4 `IPAddress` if it parses, else the
/// `GlobalIPv6Address`, else empty.
fn endpoint_ip(n: &EndpointSettings) -> String {
    let parse = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
    parse(&n.ip_address)
        .or_else(|| parse(&n.global_ipv6_address))
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// Go's `net.JoinHostPort`: brackets around a host holding `:`.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The targets Prometheus's Docker discovery makes of these containers and networks: one per
/// TCP port and network (the first network by name only, with `match_first_network`), one per
/// network with `port` for a container without TCP ports, `host_networking_host` as the address
/// in host networking mode, and the networks of the container whose network namespace a
/// `container:<id>` container shares.
pub(crate) fn targets(
    containers: &[ContainerSummary],
    networks: &[Network],
    rules: &TargetRules,
) -> Vec<Target> {
    let network_labels = network_labels(networks);
    let by_id: HashMap<&str, &ContainerSummary> = containers
        .iter()
        .filter_map(|c| Some((c.id.as_deref()?, c)))
        .collect();
    let mode_of = |c: &ContainerSummary| {
        c.host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone())
            .unwrap_or_default()
    };
    let networks_of = |c: &ContainerSummary| {
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default()
    };

    let mut out = Vec::new();
    for c in containers {
        let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
            continue;
        };
        let network_mode = mode_of(c);
        let mut common = Labels::from_iter([
            (CONTAINER_ID, c.id.clone().unwrap_or_default()),
            (CONTAINER_NAME, name.clone()),
            (CONTAINER_NETWORK_MODE, network_mode.clone()),
            // Empty values are left out, as Prometheus does since 2026-08.
            (CONTAINER_IMAGE, c.image.clone().unwrap_or_default()),
            (CONTAINER_IMAGE_ID, c.image_id.clone().unwrap_or_default()),
        ]);
        for (k, v) in c.labels.iter().flatten() {
            common.set(
                format!("{CONTAINER_LABEL_PREFIX}{}", sanitize_label_name(k)),
                v.clone(),
            );
        }

        // Sorted by name, as Prometheus sorts for `match_first_network` (the Go map order of
        // the other case is random; a sorted order makes our output stable).
        let mut nets: BTreeMap<String, EndpointSettings> = networks_of(c).into_iter().collect();
        if nets.is_empty() {
            // `container:<id>` shares another container's network namespace: follow the chain
            // to the first container with networks. A loop of containers sharing each other's
            // namespace cannot be made with Docker, but is stopped after as many steps as there
            // are containers anyway.
            let mut mode = network_mode.clone();
            for _ in 0..containers.len() {
                let Some(other) = mode.strip_prefix("container:").and_then(|id| by_id.get(id))
                else {
                    break;
                };
                nets = networks_of(other).into_iter().collect();
                mode = mode_of(other);
                if !nets.is_empty() {
                    break;
                }
            }
        }
        if rules.match_first_network && nets.len() > 1 {
            nets = nets.into_iter().take(1).collect();
        }

        for n in nets.values() {
            let ip = endpoint_ip(n);
            let mut base = common.clone();
            base.set(NETWORK_IP, ip.clone());
            for (k, v) in n
                .network_id
                .as_deref()
                .and_then(|id| network_labels.get(id))
                .into_iter()
                .flatten()
            {
                base.set(k.clone(), v.clone());
            }

            let mut added = false;
            for p in c.ports.iter().flatten() {
                if p.typ != Some(PortSummaryTypeEnum::TCP) {
                    continue;
                }
                let mut labels = base.clone();
                labels.set(PORT_PRIVATE, p.private_port.to_string());
                if let Some(public) = p.public_port.filter(|p| *p > 0) {
                    labels.set(PORT_PUBLIC, public.to_string());
                    let public_ip =
                        p.ip.as_deref()
                            .and_then(|s| s.parse::<IpAddr>().ok())
                            .map(|ip| ip.to_string())
                            .unwrap_or_default();
                    labels.set(PORT_PUBLIC_IP, public_ip);
                }
                labels.set(ADDRESS, join_host_port(&ip, p.private_port));
                out.push(Target::new(labels));
                added = true;
            }
            if !added {
                let mut labels = base;
                let address = if network_mode == "host" {
                    rules.host_networking_host.clone()
                } else {
                    join_host_port(&ip, rules.port)
                };
                labels.set(ADDRESS, address);
                out.push(Target::new(labels));
            }
        }
    }
    out
}
