//! Discovered targets: the label sets discovery hands to the collector and the enricher.

use std::borrow::Cow;

use crate::labels::{Labels, names};

/// Runtime prefixes a Kubernetes container id carries (`docker://…`).
pub const CONTAINER_RUNTIME_PREFIXES: [&str; 3] = ["docker://", "containerd://", "cri-o://"];

/// The `service_name` a target gets when nothing better is known.
pub const UNSPECIFIED_SERVICE: &str = "unspecified";

/// One discovered thing to profile or to enrich with: a set of labels, usually with discovery
/// metadata (`__meta_*`) and a way to find its processes (`__process_pid__`, container id).
///
/// ```
/// use pyro_core::{Labels, Target};
///
/// let t = Target::new(Labels::from_iter([
///     ("__meta_kubernetes_pod_container_id", "containerd://0123abcd"),
///     ("__meta_kubernetes_namespace", "shop"),
///     ("__meta_kubernetes_pod_container_name", "cart"),
/// ]));
/// assert_eq!(t.container_id(), Some("0123abcd"));
/// assert_eq!(t.service_name(), "ebpf/shop/cart");
/// assert_eq!(t.pid(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    labels: Labels,
}

impl Target {
    /// A target with these labels.
    pub fn new(labels: Labels) -> Self {
        Self { labels }
    }

    /// The target's labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The target's labels, to change.
    pub fn labels_mut(&mut self) -> &mut Labels {
        &mut self.labels
    }

    /// The labels, consuming the target.
    pub fn into_labels(self) -> Labels {
        self.labels
    }

    /// The process id from `__process_pid__`, if it parses as a non-zero `u32`.
    pub fn pid(&self) -> Option<u32> {
        self.labels
            .get(names::PROCESS_PID)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|pid| *pid != 0)
    }

    /// The container id, from the first non-empty of `__container_id__`,
    /// `__meta_kubernetes_pod_container_id` (which must carry a `docker://`, `containerd://` or
    /// `cri-o://` prefix; it is stripped) and `__meta_docker_container_id`, as Alloy does.
    pub fn container_id(&self) -> Option<&str> {
        if let Some(id) = self.labels.get_non_empty(names::CONTAINER_ID) {
            return Some(id);
        }
        if let Some(id) = self.labels.get_non_empty(names::K8S_POD_CONTAINER_ID) {
            return strip_runtime_prefix(id);
        }
        self.labels.get_non_empty(names::DOCKER_CONTAINER_ID)
    }

    /// The service name, inferred in Alloy's order: `service_name`, the
    /// `pyroscope.io/service_name` pod annotation, `ebpf/<namespace>/<container>` from Kubernetes
    /// metadata, the Docker container name (without its leading `/`), else
    /// [`UNSPECIFIED_SERVICE`].
    pub fn service_name(&self) -> Cow<'_, str> {
        infer_service_name(&self.labels)
    }
}

impl From<Labels> for Target {
    fn from(labels: Labels) -> Self {
        Self::new(labels)
    }
}

/// Strips a container runtime prefix (`docker://`, `containerd://`, `cri-o://`). An id with
/// another prefix is not usable and gives `None`.
pub fn strip_runtime_prefix(id: &str) -> Option<&str> {
    CONTAINER_RUNTIME_PREFIXES
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .filter(|s| !s.is_empty())
}

/// The service-name inference of [`Target::service_name`] on any label set: a hook other
/// components (the collector, the enricher, a host's own code) share so that they agree.
pub fn infer_service_name(labels: &Labels) -> Cow<'_, str> {
    if let Some(s) = labels.get_non_empty(names::SERVICE_NAME) {
        return Cow::Borrowed(s);
    }
    if let Some(s) = labels.get_non_empty(names::K8S_SERVICE_NAME_ANNOTATION) {
        return Cow::Borrowed(s);
    }
    if let (Some(ns), Some(c)) = (
        labels.get_non_empty(names::K8S_NAMESPACE),
        labels.get_non_empty(names::K8S_POD_CONTAINER_NAME),
    ) {
        return Cow::Owned(format!("ebpf/{ns}/{c}"));
    }
    if let Some(s) = labels.get_non_empty(names::DOCKER_CONTAINER_NAME) {
        let s = s.trim_start_matches('/');
        if !s.is_empty() {
            return Cow::Borrowed(s);
        }
    }
    Cow::Borrowed(UNSPECIFIED_SERVICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> Target {
        Target::new(Labels::from_iter(pairs.iter().copied()))
    }

    #[test]
    fn pid_parsing() {
        assert_eq!(t(&[("__process_pid__", "42")]).pid(), Some(42));
        assert_eq!(t(&[("__process_pid__", "0")]).pid(), None);
        assert_eq!(t(&[("__process_pid__", "x")]).pid(), None);
        assert_eq!(t(&[("__process_pid__", "-1")]).pid(), None);
    }

    #[test]
    fn container_id_order_and_prefixes() {
        let id = "a".repeat(64);
        assert_eq!(
            t(&[
                ("__container_id__", "first"),
                ("__meta_docker_container_id", "x")
            ])
            .container_id(),
            Some("first")
        );
        for p in CONTAINER_RUNTIME_PREFIXES {
            let v = format!("{p}{id}");
            assert_eq!(
                t(&[("__meta_kubernetes_pod_container_id", &v)]).container_id(),
                Some(id.as_str())
            );
        }
        assert_eq!(
            t(&[("__meta_kubernetes_pod_container_id", "rkt://abc")]).container_id(),
            None
        );
        assert_eq!(
            t(&[("__meta_docker_container_id", "d")]).container_id(),
            Some("d")
        );
        assert_eq!(t(&[]).container_id(), None);
    }

    #[test]
    fn service_name_order() {
        let all = [
            ("service_name", "explicit"),
            (
                "__meta_kubernetes_pod_annotation_pyroscope_io_service_name",
                "annot",
            ),
            ("__meta_kubernetes_namespace", "ns"),
            ("__meta_kubernetes_pod_container_name", "c"),
            ("__meta_docker_container_name", "/dock"),
        ];
        // Skipping the container name alone leaves no Kubernetes pair.
        let expected = [
            "explicit",
            "annot",
            "ebpf/ns/c",
            "dock",
            "dock",
            "unspecified",
        ];
        for (skip, want) in expected.iter().enumerate() {
            let target = t(&all[skip..]);
            assert_eq!(target.service_name(), *want, "skipping {skip}");
        }
        // Namespace alone is not enough.
        assert_eq!(
            t(&[("__meta_kubernetes_namespace", "ns")]).service_name(),
            "unspecified"
        );
    }
}
