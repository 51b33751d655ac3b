//! `discovery.kubernetes`: targets from the Kubernetes API, with Prometheus's labels.
//!
//! [`KubernetesDiscoverer`] lists and watches the objects of its [`Role`] (in the configured
//! namespaces, filtered by the configured label and field selectors) and yields the complete
//! target set after each change, built as Prometheus's `kubernetes_sd_config` (and so Alloy's
//! `discovery.kubernetes`) builds it:
//!
//! - `pod`: one target per container port, or per container without ports (address: the pod
//!   IP); `__meta_kubernetes_namespace`, `__meta_kubernetes_pod_{name,ip,ready,phase,node_name,
//!   host_ip,uid,controller_kind,controller_name}`, `__meta_kubernetes_pod_label_<n>`,
//!   `_labelpresent_<n>`, `_annotation_<n>`, `_annotationpresent_<n>`,
//!   `__meta_kubernetes_pod_container_{name,id,image,init,port_name,port_number,port_protocol}`;
//!   with `attach_metadata { node = true }` also `__meta_kubernetes_node_name` and the node's
//!   labels and annotations. `__meta_kubernetes_pod_container_id` (`containerd://<id>`) is what
//!   the eBPF collector matches against the id in a process's cgroup
//!   ([`pyro_core::cgroup::kubernetes_container_id_matches`]).
//! - `node`: one target per node at its kubelet; `__meta_kubernetes_node_{name,provider_id}`,
//!   `_condition_<type>`, `_label_<n>`, `_annotation_<n>`, `_address_<type>`, `instance`.
//! - `service`: one target per service port at `<name>.<namespace>.svc:<port>`;
//!   `__meta_kubernetes_service_{name,port_name,port_number,port_protocol,type,cluster_ip,
//!   external_name,loadbalancer_ip}`, labels and annotations.
//! - `endpointslice`: one target per endpoint address and port;
//!   `__meta_kubernetes_endpointslice_{name,address_type,port,port_name,port_protocol,
//!   port_app_protocol,endpoint_conditions_{ready,serving,terminating},endpoint_hostname,
//!   endpoint_node_name,endpoint_zone,address_target_kind,address_target_name}`, the service's
//!   labels, and the pod's (with its container's) when the endpoint refers to a pod; watches
//!   pods and services too.
//!
//! Label names are sanitised to `[a-zA-Z0-9_]` as Prometheus does.
//!
//! The client comes from `api_server` (with `bearer_token`/`bearer_token_file`/`tls_config`),
//! else `kubeconfig_file`, else the in-cluster service account. Watches resume from the last
//! `resourceVersion` (bookmarks requested), list again after `410 Gone`, and back off
//! exponentially on errors (kube-runtime's watcher); every failure is counted in
//! [`KubernetesMetrics`] and logged once per cause, and the last good set stays.
//!
//! A DaemonSet profiling its own node's pods watches only them, with a field selector on the
//! node name it gets from the downward API (`NODE_NAME` from `spec.nodeName`):
//!
//! ```no_run
//! use pyro_discovery::kubernetes::{KubernetesConfig, KubernetesDiscoverer};
//!
//! let node = std::env::var("NODE_NAME").expect("set from spec.nodeName");
//! let config: KubernetesConfig = serde_json::from_value(serde_json::json!({
//!     "role": "pod",
//!     "selectors": [{"role": "pod", "field": format!("spec.nodeName={node}")}],
//! })).unwrap();
//! let pods = KubernetesDiscoverer::new(config).unwrap();
//! ```

mod config;
mod discoverer;
#[doc(hidden)]
pub mod fuzzing;
mod labels;

pub use config::{AttachMetadata, KubernetesConfig, Namespaces, Role, Selector, TlsConfig};
pub use discoverer::{KubernetesDiscoverer, KubernetesError, KubernetesMetrics};

#[cfg(test)]
mod tests;
