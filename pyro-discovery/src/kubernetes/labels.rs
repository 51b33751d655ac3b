//! Prometheus's `__meta_kubernetes_*` targets per role (`discovery/kubernetes/pod.go`,
//! `node.go`, `service.go`), as pure functions of the API objects.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pyro_core::{Labels, Target};

use crate::label_name::sanitize;

const PREFIX: &str = "__meta_kubernetes_";

fn set(labels: &mut Labels, name: &str, value: impl Into<String>) {
    labels.set(format!("{PREFIX}{name}"), value);
}

/// `<role>_name`, `<role>_label_<n>`, `<role>_labelpresent_<n>`, `<role>_annotation_<n>`,
/// `<role>_annotationpresent_<n>` (Prometheus's `addObjectMetaLabels`).
fn object_meta(labels: &mut Labels, meta: &ObjectMeta, role: &str) {
    set(
        labels,
        &format!("{role}_name"),
        meta.name.clone().unwrap_or_default(),
    );
    for (k, v) in meta.labels.iter().flatten() {
        let n = sanitize(k);
        set(labels, &format!("{role}_label_{n}"), v.clone());
        set(labels, &format!("{role}_labelpresent_{n}"), "true");
    }
    for (k, v) in meta.annotations.iter().flatten() {
        let n = sanitize(k);
        set(labels, &format!("{role}_annotation_{n}"), v.clone());
        set(labels, &format!("{role}_annotationpresent_{n}"), "true");
    }
}

fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Prometheus's `podLabels`: the labels of the pod itself, shared by its targets in the `pod`
/// and `endpointslice` roles.
fn pod_labels(pod: &Pod) -> Labels {
    let default_spec = PodSpec::default();
    let default_status = PodStatus::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let status = pod.status.as_ref().unwrap_or(&default_status);
    let ip = status.pod_ip.clone().unwrap_or_default();
    let mut group = Labels::new();
    set(&mut group, "pod_ip", ip.clone());
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map_or_else(|| "unknown".to_owned(), |c| c.status.to_lowercase());
    set(&mut group, "pod_ready", ready);
    set(
        &mut group,
        "pod_phase",
        status.phase.clone().unwrap_or_default(),
    );
    set(
        &mut group,
        "pod_node_name",
        spec.node_name.clone().unwrap_or_default(),
    );
    set(
        &mut group,
        "pod_host_ip",
        status.host_ip.clone().unwrap_or_default(),
    );
    set(
        &mut group,
        "pod_uid",
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    object_meta(&mut group, &pod.metadata, "pod");
    if let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        set(&mut group, "pod_controller_kind", owner.kind.clone());
        set(&mut group, "pod_controller_name", owner.name.clone());
    }
    group
}

/// The `pod` role: one target per container port, or per container without ports (address
/// the pod IP), init containers included; none for a pod without an IP. With `node` (from
/// `attach_metadata { node = true }`), the node's name, labels and annotations are added.
pub(crate) fn pod_targets(pod: &Pod, node: Option<&Node>) -> Vec<Target> {
    let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
        return Vec::new();
    };
    let ip = status.pod_ip.clone().unwrap_or_default();
    if ip.is_empty() {
        return Vec::new();
    }
    let mut group = pod_labels(pod);
    set(
        &mut group,
        "namespace",
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    if let Some(node) = node {
        object_meta(&mut group, &node.metadata, "node");
    }

    let statuses = |init: bool| {
        if init {
            status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default()
        } else {
            status.container_statuses.as_deref().unwrap_or_default()
        }
    };
    let containers = spec
        .containers
        .iter()
        .map(|c| (c, false))
        .chain(spec.init_containers.iter().flatten().map(|c| (c, true)));
    let mut out = Vec::new();
    for (c, init) in containers {
        let id = statuses(init)
            .iter()
            .find(|s| s.name == c.name)
            .and_then(|s| s.container_id.clone())
            .unwrap_or_default();
        let mut base = group.clone();
        set(&mut base, "pod_container_name", c.name.clone());
        set(&mut base, "pod_container_id", id);
        set(
            &mut base,
            "pod_container_image",
            c.image.clone().unwrap_or_default(),
        );
        set(&mut base, "pod_container_init", init.to_string());
        let ports = c.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            base.set("__address__", ip.clone());
            out.push(Target::new(base));
            continue;
        }
        for p in ports {
            let mut t = base.clone();
            t.set("__address__", join_host_port(&ip, p.container_port));
            set(
                &mut t,
                "pod_container_port_number",
                p.container_port.to_string(),
            );
            set(
                &mut t,
                "pod_container_port_name",
                p.name.clone().unwrap_or_default(),
            );
            // The API server defaults the protocol to TCP; an object without it is TCP too.
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            set(&mut t, "pod_container_port_protocol", protocol);
            out.push(Target::new(t));
        }
    }
    out
}

/// The `node` role: one target per node, at its first address by Prometheus's preference
/// (InternalIP, InternalDNS, ExternalIP, ExternalDNS, LegacyHostIP, Hostname) and the kubelet
/// port; none for a node without an address.
pub(crate) fn node_targets(node: &Node) -> Vec<Target> {
    let status = node.status.clone().unwrap_or_default();
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in status.addresses.iter().flatten() {
        by_type
            .entry(a.type_.clone())
            .or_default()
            .push(a.address.clone());
    }
    let preferred = [
        "InternalIP",
        "InternalDNS",
        "ExternalIP",
        "ExternalDNS",
        "LegacyHostIP",
        "Hostname",
    ];
    let Some(addr) = preferred
        .iter()
        .find_map(|t| by_type.get(*t).and_then(|a| a.first()))
    else {
        return Vec::new();
    };
    let port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map_or(0, |e| e.port);
    let mut t = Labels::new();
    set(
        &mut t,
        "node_provider_id",
        node.spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default(),
    );
    for c in status.conditions.iter().flatten() {
        set(
            &mut t,
            &format!("node_condition_{}", sanitize(&c.type_.to_lowercase())),
            c.status.to_lowercase(),
        );
    }
    object_meta(&mut t, &node.metadata, "node");
    t.set("__address__", join_host_port(addr, port));
    t.set("instance", node.metadata.name.clone().unwrap_or_default());
    for (ty, a) in &by_type {
        t.set(
            sanitize(&format!("{PREFIX}node_address_{ty}")),
            a[0].clone(),
        );
    }
    vec![Target::new(t)]
}

/// The `service` role: one target per service port, at `<name>.<namespace>.svc:<port>`.
pub(crate) fn service_targets(svc: &Service) -> Vec<Target> {
    let group = service_labels(svc);
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let name = svc.metadata.name.clone().unwrap_or_default();
    let kind = spec.type_.clone().unwrap_or_default();
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let mut t = group.clone();
        t.set(
            "__address__",
            join_host_port(&format!("{name}.{ns}.svc"), p.port),
        );
        set(
            &mut t,
            "service_port_name",
            p.name.clone().unwrap_or_default(),
        );
        set(&mut t, "service_port_number", p.port.to_string());
        set(
            &mut t,
            "service_port_protocol",
            p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
        );
        set(&mut t, "service_type", kind.clone());
        if kind == "ExternalName" {
            set(
                &mut t,
                "service_external_name",
                spec.external_name.clone().unwrap_or_default(),
            );
        } else {
            set(
                &mut t,
                "service_cluster_ip",
                spec.cluster_ip.clone().unwrap_or_default(),
            );
        }
        if kind == "LoadBalancer" {
            let ips: Vec<String> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.clone().filter(|ip| !ip.is_empty()))
                .collect();
            let value = if ips.is_empty() {
                spec.load_balancer_ip.clone().unwrap_or_default()
            } else {
                ips.join(",")
            };
            set(&mut t, "service_loadbalancer_ip", value);
        }
        out.push(Target::new(t));
    }
    out
}

/// Prometheus's `serviceLabels`: namespace, name, labels and annotations of a service.
fn service_labels(svc: &Service) -> Labels {
    let mut group = Labels::new();
    set(
        &mut group,
        "namespace",
        svc.metadata.namespace.clone().unwrap_or_default(),
    );
    object_meta(&mut group, &svc.metadata, "service");
    group
}

/// The objects an EndpointSlice's targets refer to, by `namespace/name` (nodes by name).
#[derive(Debug, Default)]
pub(crate) struct Related<'a> {
    pub(crate) pods: HashMap<String, &'a Pod>,
    pub(crate) services: HashMap<String, &'a Service>,
    /// With `attach_metadata { node = true }`.
    pub(crate) nodes: Option<HashMap<&'a str, &'a Node>>,
}

/// Merges `over` into `base`, `over` winning (Prometheus's `LabelSet.Merge`).
fn merged(base: &Labels, over: &Labels) -> Labels {
    let mut out = base.clone();
    for l in over {
        out.set(l.name(), l.value());
    }
    out
}

/// The `endpointslice` role: one target per endpoint address and slice port, with the pod's
/// labels (and its matching container port's) when the endpoint refers to a known pod, plus one
/// target per further container port of such a pod; the service's labels when the slice's
/// `kubernetes.io/service-name` service is known. A slice of a dual-stack service's secondary
/// IP family makes no targets (Prometheus's `nonPrimaryIPFamilySlice`).
pub(crate) fn endpointslice_targets(eps: &EndpointSlice, related: &Related<'_>) -> Vec<Target> {
    let ns = eps.metadata.namespace.clone().unwrap_or_default();
    let mut group = Labels::new();
    set(&mut group, "namespace", ns.clone());
    set(
        &mut group,
        "endpointslice_address_type",
        eps.address_type.clone(),
    );
    object_meta(&mut group, &eps.metadata, "endpointslice");
    let svc = eps
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name"))
        .and_then(|name| related.services.get(&format!("{ns}/{name}")).copied());
    if let Some(svc) = svc {
        group = merged(&group, &service_labels(svc));
        let spec = svc.spec.clone().unwrap_or_default();
        let dual = matches!(
            spec.ip_family_policy.as_deref(),
            Some("PreferDualStack" | "RequireDualStack")
        );
        if let Some(primary) = spec.ip_families.as_ref().and_then(|f| f.first())
            && dual
            && *primary != eps.address_type
        {
            return Vec::new();
        }
    }

    let mut out: Vec<Labels> = Vec::new();
    // Pods seen through endpoints, with the slice ports they were seen on.
    let mut seen: BTreeMap<String, (&Pod, Vec<i32>)> = BTreeMap::new();
    for ep in &eps.endpoints {
        for port in eps.ports.iter().flatten() {
            for addr in &ep.addresses {
                let mut t = Labels::new();
                t.set(
                    "__address__",
                    match port.port {
                        Some(p) => join_host_port(addr, p),
                        None => addr.clone(),
                    },
                );
                if let Some(v) = &port.name {
                    set(&mut t, "endpointslice_port_name", v.clone());
                }
                if let Some(v) = &port.protocol {
                    set(&mut t, "endpointslice_port_protocol", v.clone());
                }
                if let Some(v) = port.port {
                    set(&mut t, "endpointslice_port", v.to_string());
                }
                if let Some(v) = &port.app_protocol {
                    set(&mut t, "endpointslice_port_app_protocol", v.clone());
                }
                if let Some(c) = &ep.conditions {
                    for (name, v) in [
                        ("ready", c.ready),
                        ("serving", c.serving),
                        ("terminating", c.terminating),
                    ] {
                        if let Some(v) = v {
                            set(
                                &mut t,
                                &format!("endpointslice_endpoint_conditions_{name}"),
                                v.to_string(),
                            );
                        }
                    }
                }
                if let Some(v) = &ep.hostname {
                    set(&mut t, "endpointslice_endpoint_hostname", v.clone());
                }
                if let Some(r) = &ep.target_ref {
                    set(
                        &mut t,
                        "endpointslice_address_target_kind",
                        r.kind.clone().unwrap_or_default(),
                    );
                    set(
                        &mut t,
                        "endpointslice_address_target_name",
                        r.name.clone().unwrap_or_default(),
                    );
                }
                if let Some(v) = &ep.node_name {
                    set(&mut t, "endpointslice_endpoint_node_name", v.clone());
                }
                if let Some(v) = &ep.zone {
                    set(&mut t, "endpointslice_endpoint_zone", v.clone());
                }
                for (k, v) in ep.deprecated_topology.iter().flatten() {
                    let n = sanitize(k);
                    set(
                        &mut t,
                        &format!("endpointslice_endpoint_topology_{n}"),
                        v.clone(),
                    );
                    set(
                        &mut t,
                        &format!("endpointslice_endpoint_topology_present_{n}"),
                        "true",
                    );
                }
                if let Some(nodes) = &related.nodes {
                    let node_name = match &ep.target_ref {
                        Some(r) if r.kind.as_deref() == Some("Node") => r.name.as_deref(),
                        _ => ep.node_name.as_deref(),
                    };
                    if let Some(node) = node_name.and_then(|n| nodes.get(n)) {
                        object_meta(&mut t, &node.metadata, "node");
                    }
                }
                let pod = ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        related.pods.get(&format!(
                            "{}/{}",
                            r.namespace.as_deref().unwrap_or_default(),
                            r.name.as_deref().unwrap_or_default()
                        ))
                    })
                    .copied();
                let Some(pod) = pod else {
                    out.push(t);
                    continue;
                };
                let key = key_of(pod);
                seen.entry(key.clone()).or_insert((pod, Vec::new()));
                t = merged(&t, &pod_labels(pod));
                if let Some(p) = port.port
                    && let Some((c, cport, init)) = container_port(pod, p)
                {
                    container_labels(&mut t, c, cport, init);
                }
                if let (Some(p), Some(entry)) = (port.port, seen.get_mut(&key)) {
                    entry.1.push(p);
                }
                out.push(t);
            }
        }
    }
    for (pod, ports) in seen.values() {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        if ip.is_empty() {
            continue;
        }
        for (c, init) in containers(pod) {
            for cport in c.ports.iter().flatten() {
                if ports.contains(&cport.container_port) {
                    continue;
                }
                let mut t = Labels::new();
                t.set("__address__", join_host_port(&ip, cport.container_port));
                container_labels(&mut t, c, cport, init);
                out.push(merged(&t, &pod_labels(pod)));
            }
        }
    }
    out.into_iter()
        .map(|t| Target::new(merged(&group, &t)))
        .collect()
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A pod's containers, then its init containers, each with whether it is an init container.
fn containers(pod: &Pod) -> impl Iterator<Item = (&k8s_openapi::api::core::v1::Container, bool)> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.containers.iter().map(|c| (c, false)))
        .chain(
            spec.into_iter()
                .flat_map(|s| s.init_containers.iter().flatten().map(|c| (c, true))),
        )
}

fn container_port(
    pod: &Pod,
    port: i32,
) -> Option<(
    &k8s_openapi::api::core::v1::Container,
    &k8s_openapi::api::core::v1::ContainerPort,
    bool,
)> {
    containers(pod).find_map(|(c, init)| {
        c.ports
            .iter()
            .flatten()
            .find(|p| p.container_port == port)
            .map(|p| (c, p, init))
    })
}

fn container_labels(
    t: &mut Labels,
    c: &k8s_openapi::api::core::v1::Container,
    p: &k8s_openapi::api::core::v1::ContainerPort,
    init: bool,
) {
    set(t, "pod_container_name", c.name.clone());
    set(
        t,
        "pod_container_image",
        c.image.clone().unwrap_or_default(),
    );
    set(
        t,
        "pod_container_port_name",
        p.name.clone().unwrap_or_default(),
    );
    set(t, "pod_container_port_number", p.container_port.to_string());
    set(
        t,
        "pod_container_port_protocol",
        p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
    );
    set(t, "pod_container_init", init.to_string());
}
