//! Entry point for the `kubernetes_targets` fuzz target (`fuzz/`): API objects as bytes,
//! through the same models and target rules the discoverer uses. Not part of the API.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use pyro_core::Target;
use serde::Deserialize;

use super::labels::{Related, endpointslice_targets, node_targets, pod_targets, service_targets};

/// A `List` as `kubectl get pods,nodes,services,endpointslices -o json` prints it.
#[derive(Deserialize)]
struct List {
    items: Vec<serde_json::Value>,
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Decodes a `List` of pods, nodes, services and endpoint slices (other kinds are passed
/// over; an item of a known kind that does not decode is an error, as the watcher's decoding
/// is) and makes the targets of every role, endpoint slices with the related pods, services
/// and (as with `attach_metadata { node = true }`) nodes of the list.
pub fn targets_from_json(list: &[u8]) -> Result<Vec<Target>, serde_json::Error> {
    let list: List = serde_json::from_slice(list)?;
    let (mut pods, mut nodes, mut services, mut slices) = (vec![], vec![], vec![], vec![]);
    for item in list.items {
        match item.get("kind").and_then(|k| k.as_str()) {
            Some("Pod") => pods.push(serde_json::from_value::<Pod>(item)?),
            Some("Node") => nodes.push(serde_json::from_value::<Node>(item)?),
            Some("Service") => services.push(serde_json::from_value::<Service>(item)?),
            Some("EndpointSlice") => slices.push(serde_json::from_value::<EndpointSlice>(item)?),
            _ => {}
        }
    }
    let by_name: HashMap<&str, &Node> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n))
        .collect();
    let related = Related {
        pods: pods.iter().map(|p| (key(&p.metadata), p)).collect(),
        services: services.iter().map(|s| (key(&s.metadata), s)).collect(),
        nodes: Some(by_name.clone()),
    };
    let mut out = Vec::new();
    for p in &pods {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| by_name.get(n).copied());
        out.extend(pod_targets(p, node));
    }
    for n in &nodes {
        out.extend(node_targets(n));
    }
    for s in &services {
        out.extend(service_targets(s));
    }
    for e in &slices {
        out.extend(endpointslice_targets(e, &related));
    }
    Ok(out)
}
