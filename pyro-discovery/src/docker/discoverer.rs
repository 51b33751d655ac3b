//! [`DockerDiscoverer`]: the refresh loop on the Engine API, its errors and metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptions};
use futures_util::StreamExt;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use pyro_core::{Discoverer, Target, TargetStream};

use super::config::{DockerConfig, TlsConfig};
use super::targets::{TargetRules, targets};

/// The first retry after a failed refresh; doubled on each further failure up to
/// `refresh_interval`.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// A cause that keeps failing is logged again after this long.
const RELOG_INTERVAL: Duration = Duration::from_secs(600);

/// What went wrong talking to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// No connection (no socket, refused, reset, TLS failure).
    Unreachable,
    /// The daemon answered with this error status.
    Status(u16),
    /// The answer did not decode as the Engine API's JSON.
    Decode,
    /// No answer within `refresh_interval`.
    Timeout,
    /// Anything else the client reported.
    Other,
}

/// Errors of `discovery.docker`: a config that cannot take effect, or a failed API call.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// `host` is empty.
    #[error("discovery.docker: `host` is required")]
    MissingHost,
    /// `host` is not a `unix://`, `tcp://`, `http://` or `https://` address.
    #[error("discovery.docker: `host` {host:?}: {reason}")]
    InvalidHost {
        /// The configured host.
        host: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A field is set to a value that cannot take effect.
    #[error("discovery.docker: `{field}` {reason}")]
    InvalidField {
        /// The field, as Alloy names it.
        field: &'static str,
        /// Why it cannot take effect.
        reason: &'static str,
    },
    /// A credentials file could not be read.
    #[error("discovery.docker: reading `{field}` from {}: {source}", path.display())]
    ReadFile {
        /// The field naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A call to the Engine API failed.
    #[error("discovery.docker: {call} on {host}: {message}")]
    Api {
        /// The configured host.
        host: String,
        /// The call (`GET /containers/json`, …).
        call: &'static str,
        /// What kind of failure.
        kind: ApiErrorKind,
        /// The client's description.
        message: String,
    },
}

impl DockerError {
    /// The kind of API failure, for [`DockerError::Api`].
    pub fn api_kind(&self) -> Option<ApiErrorKind> {
        match self {
            Self::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

fn kind_of(e: &bollard::errors::Error) -> ApiErrorKind {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { status_code, .. } => ApiErrorKind::Status(*status_code),
        E::JsonDataError { .. } | E::JsonSerdeError { .. } | E::APIVersionParseError {} => {
            ApiErrorKind::Decode
        }
        E::RequestTimeoutError => ApiErrorKind::Timeout,
        E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::SocketNotFoundError(_) => ApiErrorKind::Unreachable,
        _ => ApiErrorKind::Other,
    }
}

/// Counters of a [`DockerDiscoverer`].
#[derive(Debug, Clone, Default)]
pub struct DockerMetrics {
    refreshes: Counter,
    failures: Counter,
    targets: Gauge,
}

impl DockerMetrics {
    /// Creates the metrics and registers them as `pyroscope_discovery_docker_refreshes_total`,
    /// `pyroscope_discovery_docker_refresh_failures_total` and
    /// `pyroscope_discovery_docker_targets`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_discovery_docker_refreshes",
            "Container listings attempted",
            m.refreshes.clone(),
        );
        registry.register(
            "pyroscope_discovery_docker_refresh_failures",
            "Container listings that failed (the last good target set was kept)",
            m.failures.clone(),
        );
        registry.register(
            "pyroscope_discovery_docker_targets",
            "Targets in the current set",
            m.targets.clone(),
        );
        m
    }

    /// Listings attempted so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.get()
    }

    /// Listings that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.get()
    }
}

/// How the daemon is reached.
#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Http(String),
    Https { addr: String, tls: ResolvedTls },
}

#[derive(Debug, Clone)]
struct ResolvedTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Where the `Authorization` header comes from (read again at each refresh for files).
#[derive(Debug, Clone)]
enum Auth {
    None,
    Header {
        kind: String,
        secret: Secret,
    },
    Basic {
        user: Secret,
        password: Option<Secret>,
    },
}

#[derive(Debug, Clone)]
enum Secret {
    Value(String),
    File { field: &'static str, path: PathBuf },
}

impl Secret {
    fn from_pair(
        value: Option<&str>,
        file: Option<&PathBuf>,
        field: &'static str,
        both: &'static str,
    ) -> Result<Option<Self>, DockerError> {
        match (value, file) {
            (Some(_), Some(_)) => Err(DockerError::InvalidField {
                field,
                reason: both,
            }),
            (Some(v), None) => Ok(Some(Self::Value(v.to_owned()))),
            (None, Some(p)) => Ok(Some(Self::File {
                field,
                path: p.clone(),
            })),
            (None, None) => Ok(None),
        }
    }

    fn read(&self) -> Result<String, DockerError> {
        match self {
            Self::Value(v) => Ok(v.clone()),
            Self::File { field, path } => std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|source| DockerError::ReadFile {
                    field,
                    path: path.clone(),
                    source,
                }),
        }
    }
}

impl Auth {
    fn from_config(c: &DockerConfig) -> Result<Self, DockerError> {
        let set = [
            c.bearer_token.is_some() || c.bearer_token_file.is_some(),
            c.basic_auth.is_some(),
            c.authorization.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(DockerError::InvalidField {
                field: "authorization",
                reason: "conflicts: at most one of bearer_token/bearer_token_file, basic_auth and \
                         authorization may be set",
            });
        }
        if let Some(secret) = Secret::from_pair(
            c.bearer_token
                .as_ref()
                .map(pyro_core::config::Secret::expose),
            c.bearer_token_file.as_ref(),
            "bearer_token_file",
            "and `bearer_token` are both set",
        )? {
            return Ok(Self::Header {
                kind: "Bearer".to_owned(),
                secret,
            });
        }
        if let Some(a) = &c.authorization {
            let secret = Secret::from_pair(
                a.credentials
                    .as_ref()
                    .map(pyro_core::config::Secret::expose),
                a.credentials_file.as_ref(),
                "authorization.credentials_file",
                "and `authorization.credentials` are both set",
            )?
            .ok_or(DockerError::InvalidField {
                field: "authorization.credentials",
                reason: "is required in an authorization block",
            })?;
            if a.kind.eq_ignore_ascii_case("basic") {
                return Err(DockerError::InvalidField {
                    field: "authorization.type",
                    reason: "cannot be \"Basic\": use basic_auth",
                });
            }
            return Ok(Self::Header {
                kind: a.kind.clone(),
                secret,
            });
        }
        if let Some(b) = &c.basic_auth {
            let user = Secret::from_pair(
                (!b.username.is_empty()).then_some(b.username.as_str()),
                b.username_file.as_ref(),
                "basic_auth.username_file",
                "and `basic_auth.username` are both set",
            )?
            .ok_or(DockerError::InvalidField {
                field: "basic_auth.username",
                reason: "is required in a basic_auth block",
            })?;
            let password = Secret::from_pair(
                b.password.as_ref().map(pyro_core::config::Secret::expose),
                b.password_file.as_ref(),
                "basic_auth.password_file",
                "and `basic_auth.password` are both set",
            )?;
            return Ok(Self::Basic { user, password });
        }
        Ok(Self::None)
    }

    /// The header value, reading any files now.
    fn header(&self) -> Result<Option<HeaderValue>, DockerError> {
        let value = match self {
            Self::None => return Ok(None),
            Self::Header { kind, secret } => format!("{kind} {}", secret.read()?),
            Self::Basic { user, password } => {
                let pass = password.as_ref().map(Secret::read).transpose()?;
                let raw = format!("{}:{}", user.read()?, pass.unwrap_or_default());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
            }
        };
        HeaderValue::from_str(&value)
            .map(|mut v| {
                v.set_sensitive(true);
                Some(v)
            })
            .map_err(|_| DockerError::InvalidField {
                field: "authorization",
                reason: "credentials hold characters an HTTP header cannot carry",
            })
    }
}

fn resolve_tls(t: &TlsConfig) -> Result<ResolvedTls, DockerError> {
    let need = |v: &Option<PathBuf>, field| {
        v.clone().ok_or(DockerError::InvalidField {
            field,
            reason: "is required: the Docker client takes ca_file, cert_file and key_file \
                     together",
        })
    };
    Ok(ResolvedTls {
        ca: need(&t.ca_file, "tls_config.ca_file")?,
        cert: need(&t.cert_file, "tls_config.cert_file")?,
        key: need(&t.key_file, "tls_config.key_file")?,
    })
}

fn endpoint(c: &DockerConfig, auth: &Auth) -> Result<Endpoint, DockerError> {
    let host = c.host.trim();
    if host.is_empty() {
        return Err(DockerError::MissingHost);
    }
    let invalid = |reason| DockerError::InvalidHost {
        host: c.host.clone(),
        reason,
    };
    let (scheme, rest) = host
        .split_once("://")
        .ok_or_else(|| invalid("has no scheme: expected unix://, tcp://, http:// or https://"))?;
    if rest.is_empty() {
        return Err(invalid("has no address after the scheme"));
    }
    match scheme {
        "unix" => {
            let field = match (auth, &c.tls_config) {
                (_, Some(_)) => Some("tls_config"),
                (Auth::None, None) => None,
                (Auth::Basic { .. }, None) => Some("basic_auth"),
                (Auth::Header { .. }, None) => Some("authorization"),
            };
            if let Some(field) = field {
                return Err(DockerError::InvalidField {
                    field,
                    reason: "has no effect on a unix:// host (the socket's permissions guard it)",
                });
            }
            Ok(Endpoint::Unix(PathBuf::from(rest)))
        }
        "tcp" | "http" | "https" => {
            let addr = rest.to_owned();
            match (&c.tls_config, scheme) {
                (Some(_), "http") => Err(DockerError::InvalidField {
                    field: "tls_config",
                    reason: "needs a tcp:// or https:// host, not http://",
                }),
                (Some(t), _) => Ok(Endpoint::Https {
                    addr,
                    tls: resolve_tls(t)?,
                }),
                (None, "https") => Err(DockerError::InvalidField {
                    field: "tls_config",
                    reason: "is required for an https:// host (ca_file, cert_file, key_file)",
                }),
                (None, _) => Ok(Endpoint::Http(addr)),
            }
        }
        _ => Err(invalid(
            "has an unsupported scheme: expected unix://, tcp://, http:// or https://",
        )),
    }
}

#[derive(Debug)]
struct Inner {
    host: String,
    endpoint: Endpoint,
    auth: Auth,
    refresh_interval: Duration,
    filters: HashMap<String, Vec<String>>,
    rules: TargetRules,
}

/// `discovery.docker`: a [`Discoverer`] whose stream lists the daemon's containers each
/// `refresh_interval` and yields the target set whenever it changes.
#[derive(Debug, Clone)]
pub struct DockerDiscoverer {
    inner: Arc<Inner>,
    metrics: DockerMetrics,
}

impl DockerDiscoverer {
    /// Checks `config` and builds the discoverer; nothing is contacted until the stream is
    /// polled. Every field that cannot take effect is an error naming it.
    pub fn new(config: DockerConfig) -> Result<Self, DockerError> {
        let auth = Auth::from_config(&config)?;
        let endpoint = endpoint(&config, &auth)?;
        if config.refresh_interval.is_zero() {
            return Err(DockerError::InvalidField {
                field: "refresh_interval",
                reason: "must be positive",
            });
        }
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        for f in &config.filter {
            if f.name.is_empty() {
                return Err(DockerError::InvalidField {
                    field: "filter.name",
                    reason: "is required in a filter block",
                });
            }
            filters
                .entry(f.name.clone())
                .or_default()
                .extend(f.values.iter().cloned());
        }
        // Fail early on unreadable credential files, as Prometheus's config check does.
        auth.header()?;
        Ok(Self {
            inner: Arc::new(Inner {
                host: config.host.clone(),
                endpoint,
                auth,
                refresh_interval: config.refresh_interval,
                filters,
                rules: TargetRules {
                    port: config.port,
                    host_networking_host: config.host_networking_host,
                    match_first_network: config.match_first_network,
                },
            }),
            metrics: DockerMetrics::default(),
        })
    }

    /// Counts into `metrics` (from [`DockerMetrics::register`]).
    #[must_use]
    pub fn with_metrics(mut self, metrics: DockerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this discoverer counts into.
    pub fn metrics(&self) -> &DockerMetrics {
        &self.metrics
    }

    /// Lists the containers and networks once and returns their targets.
    pub async fn refresh(&self) -> Result<Vec<Target>, DockerError> {
        let mut client = Client::new(Arc::clone(&self.inner), self.metrics.clone());
        client.refresh().await
    }
}

/// A connected client: the bollard handle and the header its requests carry.
struct Client {
    inner: Arc<Inner>,
    metrics: DockerMetrics,
    docker: Option<Docker>,
    header: Arc<Mutex<Option<HeaderValue>>>,
}

impl Client {
    fn new(inner: Arc<Inner>, metrics: DockerMetrics) -> Self {
        Self {
            inner,
            metrics,
            docker: None,
            header: Arc::new(Mutex::new(None)),
        }
    }

    fn api_error(&self, call: &'static str, e: &bollard::errors::Error) -> DockerError {
        DockerError::Api {
            host: self.inner.host.clone(),
            call,
            kind: kind_of(e),
            message: e.to_string(),
        }
    }

    async fn connect(&mut self) -> Result<Docker, DockerError> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let timeout = self.inner.refresh_interval.as_secs().max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let docker = match &self.inner.endpoint {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), timeout, version)
            }
            Endpoint::Http(addr) => Docker::connect_with_http(addr, timeout, version),
            Endpoint::Https { addr, tls } => Docker::connect_with_ssl(
                addr,
                Path::new(&tls.key),
                Path::new(&tls.cert),
                Path::new(&tls.ca),
                timeout,
                version,
            ),
        }
        .map_err(|e| self.api_error("connect", &e))?;
        let header = Arc::clone(&self.header);
        let docker = docker.with_request_modifier(move |mut req| {
            let value = header.lock().ok().and_then(|h| h.clone());
            if let Some(v) = value {
                req.headers_mut().insert(http::header::AUTHORIZATION, v);
            }
            req
        });
        // The newest API version both sides speak (Debian 12's engine speaks 1.41).
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| self.api_error("GET /version", &e))?;
        self.docker = Some(docker.clone());
        Ok(docker)
    }

    async fn refresh(&mut self) -> Result<Vec<Target>, DockerError> {
        self.metrics.refreshes.inc();
        let header = self.inner.auth.header()?;
        if let Ok(mut h) = self.header.lock() {
            *h = header;
        }
        let docker = self.connect().await?;
        let options = ListContainersOptionsBuilder::new()
            .filters(&self.inner.filters)
            .build();
        let containers = docker.list_containers(Some(options)).await;
        let containers = containers.map_err(|e| self.api_error("GET /containers/json", &e))?;
        let networks = docker.list_networks(None::<ListNetworksOptions>).await;
        let networks = networks.map_err(|e| self.api_error("GET /networks", &e))?;
        let mut out = targets(&containers, &networks, &self.inner.rules);
        out.sort();
        Ok(out)
    }
}

/// The stream's state between items.
struct StreamState {
    client: Client,
    last: Option<Vec<Target>>,
    delay: Option<Duration>,
    backoff: Duration,
    last_error: Option<(String, Instant)>,
}

impl StreamState {
    async fn next(mut self) -> Option<(Vec<Target>, Self)> {
        let interval = self.client.inner.refresh_interval;
        loop {
            if let Some(d) = self.delay.take() {
                tokio::time::sleep(d).await;
            }
            match self.client.refresh().await {
                Ok(set) => {
                    self.backoff = FIRST_RETRY.min(interval);
                    self.delay = Some(interval);
                    if self.last_error.take().is_some() {
                        tracing::info!(host = %self.client.inner.host, "Docker discovery recovered.");
                    }
                    if self.last.as_ref() == Some(&set) {
                        continue;
                    }
                    self.client.metrics.targets.set(set.len() as i64);
                    self.last = Some(set.clone());
                    return Some((set, self));
                }
                Err(e) => {
                    self.client.metrics.failures.inc();
                    let cause = e.to_string();
                    let repeat = self
                        .last_error
                        .as_ref()
                        .is_some_and(|(c, at)| *c == cause && at.elapsed() < RELOG_INTERVAL);
                    if repeat {
                        tracing::debug!(error = %cause, "Docker discovery failed again; keeping the last targets.");
                    } else {
                        tracing::warn!(error = %cause, retry_in = ?self.backoff, "Docker discovery failed; keeping the last targets.");
                        self.last_error = Some((cause, Instant::now()));
                    }
                    // A transport failure may have left a dead connection: reconnect next time.
                    if matches!(
                        e.api_kind(),
                        Some(ApiErrorKind::Unreachable | ApiErrorKind::Timeout)
                    ) {
                        self.client.docker = None;
                    }
                    self.delay = Some(self.backoff);
                    self.backoff = (self.backoff * 2).min(interval);
                    if self.last.is_none() {
                        // Nothing known yet: say so, so consumers are not left waiting.
                        self.last = Some(Vec::new());
                        return Some((Vec::new(), self));
                    }
                }
            }
        }
    }
}

impl Discoverer for DockerDiscoverer {
    fn subscribe(&self) -> TargetStream {
        let interval = self.inner.refresh_interval;
        let state = StreamState {
            client: Client::new(Arc::clone(&self.inner), self.metrics.clone()),
            last: None,
            delay: None,
            backoff: FIRST_RETRY.min(interval),
            last_error: None,
        };
        futures_util::stream::unfold(state, StreamState::next).boxed()
    }
}
