//! Prometheus's `__meta_kubernetes_*` targets per role (`discovery/kubernetes/pod.go`,
//! `node.go`, `service.go`), as pure functions of the API objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
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
    let mut group = Labels::new();
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    set(&mut group, "namespace", ns.clone());
    object_meta(&mut group, &svc.metadata, "service");
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
