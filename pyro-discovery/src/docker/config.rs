//! [`DockerConfig`]: Alloy's `discovery.docker` arguments as plain data.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Alloy's `discovery.docker` arguments, with its defaults.
///
/// Alloy arguments pyro does not support are not fields, so a config that sets one is refused
/// by `deny_unknown_fields` with the argument's name: `oauth2`, `proxy_url`, `no_proxy`,
/// `proxy_from_environment`, `proxy_connect_header`, `follow_redirects`, `enable_http2` (the
/// Engine API is plain HTTP/1.1 without redirects), and in `tls_config` the PEM strings,
/// `server_name`, `insecure_skip_verify` and `min_version` (see [`TlsConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// The daemon: `unix:///path/docker.sock`, `tcp://host:port`, `http://host:port`, or
    /// `https://host:port` / `tcp://` with a [`tls_config`](Self::tls_config). Required.
    pub host: String,
    /// The port of a target whose container has no TCP port. Default 80.
    pub port: u16,
    /// The address of a container in host networking mode. Default `"localhost"`.
    pub host_networking_host: String,
    /// How often the containers are listed. Default 1 minute.
    #[serde(with = "pyro_core::config::duration")]
    pub refresh_interval: Duration,
    /// Container list filters (Docker's `filters` query parameter): `filter` blocks in Alloy.
    pub filter: Vec<Filter>,
    /// Of a container on several networks, make targets for the first network by name only.
    /// Default true.
    pub match_first_network: bool,
    /// A bearer token for the `Authorization` header (TCP hosts only).
    pub bearer_token: Option<pyro_core::config::Secret>,
    /// A file holding the bearer token, read at each refresh (TCP hosts only).
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic authentication (TCP hosts only).
    pub basic_auth: Option<BasicAuth>,
    /// An `Authorization` header of any type (TCP hosts only).
    pub authorization: Option<Authorization>,
    /// TLS client certificates for a TCP host (`dockerd --tlsverify`).
    pub tls_config: Option<TlsConfig>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 80,
            host_networking_host: "localhost".to_owned(),
            refresh_interval: Duration::from_secs(60),
            filter: Vec::new(),
            match_first_network: true,
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            authorization: None,
            tls_config: None,
        }
    }
}

/// A `filter` block: containers whose `name` attribute matches one of `values` (Docker's
/// container list filters: `label`, `name`, `network`, `status`, `ancestor`, …).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// The filter's name, such as `label`.
    pub name: String,
    /// Its values, such as `["com.example.profile=true"]`; a container matches any.
    pub values: Vec<String>,
}

/// A `basic_auth` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// A file holding the user name, instead of `username`.
    pub username_file: Option<PathBuf>,
    /// The password.
    pub password: Option<pyro_core::config::Secret>,
    /// A file holding the password, instead of `password`.
    pub password_file: Option<PathBuf>,
}

/// An `authorization` block: `Authorization: <type> <credentials>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    /// The scheme. Default `"Bearer"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The credentials.
    pub credentials: Option<pyro_core::config::Secret>,
    /// A file holding the credentials, instead of `credentials`.
    pub credentials_file: Option<PathBuf>,
}

impl Default for Authorization {
    fn default() -> Self {
        Self {
            kind: "Bearer".to_owned(),
            credentials: None,
            credentials_file: None,
        }
    }
}

/// A `tls_config` block, as Docker's own `--tlsverify` client takes it: a CA file that signed
/// the daemon's certificate and the client's certificate and key files. All three are needed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA certificate (PEM) the daemon's certificate is checked against.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// The client's private key (PEM).
    pub key_file: Option<PathBuf>,
}
