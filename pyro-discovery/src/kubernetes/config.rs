//! [`KubernetesConfig`]: Alloy's `discovery.kubernetes` arguments as plain data.

use std::path::PathBuf;

use serde::Deserialize;

/// Alloy's `discovery.kubernetes` arguments.
///
/// Alloy arguments pyro does not support are not fields, so a config that sets one is refused
/// by `deny_unknown_fields` with its name: `basic_auth`, `authorization`, `oauth2`,
/// `proxy_url`, `no_proxy`, `proxy_from_environment`, `proxy_connect_header`,
/// `follow_redirects`, `enable_http2`, `attach_metadata.namespace`, and in `tls_config` the PEM
/// strings and `min_version`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The API server URL. Empty: `kubeconfig_file`, else the in-cluster service account.
    pub api_server: Option<String>,
    /// What to discover. Required.
    pub role: Option<Role>,
    /// A kubeconfig file (its current context), instead of `api_server`.
    pub kubeconfig_file: Option<PathBuf>,
    /// A bearer token for `api_server`.
    pub bearer_token: Option<pyro_core::config::Secret>,
    /// A file holding the bearer token for `api_server`, re-read as it changes.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS settings for `api_server`.
    pub tls_config: Option<TlsConfig>,
    /// The namespaces to watch; all when empty.
    pub namespaces: Namespaces,
    /// Label and field selectors, per role (`selectors` blocks in Alloy).
    pub selectors: Vec<Selector>,
    /// Metadata of related objects to add (`attach_metadata` block).
    pub attach_metadata: AttachMetadata,
}

/// The object kind a discoverer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One target per pod container port (or per container without ports).
    Pod,
    /// One target per node, at its kubelet.
    Node,
    /// One target per service port.
    Service,
    /// One target per EndpointSlice endpoint and port.
    #[serde(rename = "endpointslice")]
    EndpointSlice,
}

impl Role {
    /// The name Alloy gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Node => "node",
            Self::Service => "service",
            Self::EndpointSlice => "endpointslice",
        }
    }
}

/// The `namespaces` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Namespaces {
    /// Also the namespace this process runs in (the service account's namespace file).
    pub own_namespace: bool,
    /// These namespaces.
    pub names: Vec<String>,
}

/// A `selectors` block: server-side filters for the objects of `role`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// The role whose objects are filtered.
    pub role: Role,
    /// A label selector, such as `app=web,tier!=db`.
    #[serde(default)]
    pub label: String,
    /// A field selector, such as `spec.nodeName=node-1`.
    #[serde(default)]
    pub field: String,
}

/// The `attach_metadata` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachMetadata {
    /// Add the node's `__meta_kubernetes_node_*` labels to pod targets (watches nodes too).
    pub node: bool,
}

/// The `tls_config` block for `api_server` (the one client TLS block of pyro).
pub use pyro_core::config::TlsConfig;
