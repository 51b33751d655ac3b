//! Configuration: plain data named like the arguments of Alloy's `pyroscope.write`, with its
//! defaults, plus the queue settings Alloy lacks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use pyro_core::config::{Secret, TlsConfig};
use serde::Deserialize;

/// HTTP basic authentication (`basic_auth` block). Give `password` or `password_file`, not both;
/// the file is read again for every request, so a rotated password is picked up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    /// User name (for Grafana Cloud, the stack's instance id).
    pub username: String,
    /// The password.
    pub password: Option<Secret>,
    /// A file holding the password (surrounding whitespace is trimmed).
    pub password_file: Option<PathBuf>,
}

/// Request body compression (`Content-Encoding` of the push request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Compression {
    /// Gzip the body unless the pprof payload in it is already gzip-compressed (as pprof files
    /// usually are): compressing it again saves almost nothing and costs about two thirds of the
    /// push throughput (see `BENCHMARKS.md`).
    #[default]
    Auto,
    /// Always `Content-Encoding: gzip` (the only compressor Pyroscope accepts), fastest level.
    Gzip,
    /// Never compress.
    None,
}

/// What [`Writer::append`](crate::Writer) does when an endpoint's queue is full. In JSON:
/// `"fail_fast"`, or a duration to wait (`"1s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum FullPolicy {
    /// Wait up to this long for room, then drop the profile for that endpoint (reason
    /// `queue_full`).
    Wait(Duration),
    /// Drop at once (reason `queue_full`).
    FailFast,
}

impl TryFrom<String> for FullPolicy {
    type Error = pyro_core::config::DurationError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "fail_fast" {
            return Ok(Self::FailFast);
        }
        pyro_core::config::parse_duration(&s).map(Self::Wait)
    }
}

impl Default for FullPolicy {
    fn default() -> Self {
        Self::Wait(Duration::from_secs(1))
    }
}

/// The per-endpoint queue that bounds memory: profiles waiting to be sent, being sent or waiting
/// to be retried all count against the limits until they are delivered or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Bytes held for this endpoint at most (pprof payload plus label bytes of every profile).
    /// Default 64 MiB.
    pub max_bytes: usize,
    /// Profiles held for this endpoint at most. Default 10 000.
    pub max_profiles: usize,
    /// Pushes in flight to this endpoint at once (each retrying on its own). Default 8.
    pub concurrency: usize,
    /// What an append does when the queue is full. Default: wait up to 1 s.
    pub when_full: FullPolicy,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_profiles: 10_000,
            concurrency: 8,
            when_full: FullPolicy::default(),
        }
    }
}

/// When and how often the writer retries a failed push to one endpoint.
///
/// The first delay is drawn uniformly from `[min_backoff_period, 2·min_backoff_period)`; each
/// further one doubles that range, capped at `max_backoff_period` (dskit's backoff, as Alloy). A
/// server's `Retry-After` raises the delay to what it asks, up to `max_backoff_period`.
///
/// In JSON its fields sit directly in the `endpoint` object, as in Alloy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay (`min_backoff_period`). Default 500 ms.
    pub min_backoff_period: Duration,
    /// Largest delay (`max_backoff_period`). Default 5 min.
    pub max_backoff_period: Duration,
    /// Retries after the first attempt (so 10 means up to 11 attempts); 0 retries until the
    /// writer shuts down, as in Alloy. Default 10.
    pub max_backoff_retries: u32,
    /// Retry `resource_exhausted` / HTTP 429 (rate limits). Default `false`: a rate-limited
    /// profile is dropped rather than adding to the load that caused the limit.
    pub retry_on_http_429: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_backoff_period: Duration::from_millis(500),
            max_backoff_period: Duration::from_secs(300),
            max_backoff_retries: 10,
            retry_on_http_429: false,
        }
    }
}

/// One Pyroscope endpoint (`endpoint` block).
///
/// ```
/// use std::time::Duration;
/// use pyro_write::{EndpointConfig, Secret};
///
/// let mut endpoint = EndpointConfig::new("https://profiles-prod-001.grafana.net");
/// endpoint.basic_auth = Some(pyro_write::BasicAuth {
///     username: "123456".into(),
///     password: Some(Secret::new("glc_…")),
///     password_file: None,
/// });
/// endpoint.remote_timeout = Duration::from_secs(5);
/// assert!(!format!("{endpoint:?}").contains("glc_"));
///
/// // The same from JSON, with Alloy's argument names (retry settings directly in the block):
/// let json: EndpointConfig = serde_json::from_str(r#"{
///     "url": "https://profiles-prod-001.grafana.net", "remote_timeout": "5s",
///     "basic_auth": {"username": "123456", "password": "glc_…"}, "max_backoff_retries": 3
/// }"#).unwrap();
/// assert_eq!(json.remote_timeout, Duration::from_secs(5));
/// assert_eq!(json.retry.max_backoff_retries, 3);
/// assert!(serde_json::from_str::<EndpointConfig>(r#"{"url": "http://x", "oauth2": {}}"#).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "EndpointWire")]
pub struct EndpointConfig {
    /// Base URL; `/push.v1.PusherService/Push` is appended.
    pub url: String,
    /// Name for logs and metrics; the URL when empty.
    pub name: String,
    /// Timeout of one attempt. Default 10 s.
    pub remote_timeout: Duration,
    /// Extra request headers. Values are treated as secrets (never in `Debug` output).
    pub headers: BTreeMap<String, String>,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token (`Authorization: Bearer …`).
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token, read for every request.
    pub bearer_token_file: Option<PathBuf>,
    /// Tenant, sent as `X-Scope-OrgID`.
    pub tenant_id: Option<String>,
    /// TLS settings for `https` URLs.
    pub tls_config: TlsConfig,
    /// Retries.
    pub retry: RetryPolicy,
    /// Memory bound and concurrency.
    pub queue: QueueConfig,
    /// Request body compression. Default [`Compression::Auto`].
    pub compression: Compression,
}

/// An `endpoint` block as written in JSON: Alloy's flat argument list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointWire {
    url: String,
    #[serde(default)]
    name: String,
    #[serde(default, with = "pyro_core::config::opt_duration")]
    remote_timeout: Option<Duration>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
    #[serde(default)]
    bearer_token: Option<Secret>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    tls_config: TlsConfig,
    #[serde(default, with = "pyro_core::config::opt_duration")]
    min_backoff_period: Option<Duration>,
    #[serde(default, with = "pyro_core::config::opt_duration")]
    max_backoff_period: Option<Duration>,
    #[serde(default)]
    max_backoff_retries: Option<u32>,
    #[serde(default)]
    retry_on_http_429: Option<bool>,
    #[serde(default)]
    queue: QueueConfig,
    #[serde(default)]
    compression: Compression,
}

impl From<EndpointWire> for EndpointConfig {
    fn from(w: EndpointWire) -> Self {
        let d = Self::new(w.url);
        let r = d.retry;
        Self {
            name: w.name,
            remote_timeout: w.remote_timeout.unwrap_or(d.remote_timeout),
            headers: w.headers,
            basic_auth: w.basic_auth,
            bearer_token: w.bearer_token,
            bearer_token_file: w.bearer_token_file,
            tenant_id: w.tenant_id,
            tls_config: w.tls_config,
            retry: RetryPolicy {
                min_backoff_period: w.min_backoff_period.unwrap_or(r.min_backoff_period),
                max_backoff_period: w.max_backoff_period.unwrap_or(r.max_backoff_period),
                max_backoff_retries: w.max_backoff_retries.unwrap_or(r.max_backoff_retries),
                retry_on_http_429: w.retry_on_http_429.unwrap_or(r.retry_on_http_429),
            },
            queue: w.queue,
            compression: w.compression,
            ..d
        }
    }
}

impl EndpointConfig {
    /// An endpoint with Alloy's defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: String::new(),
            remote_timeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            tenant_id: None,
            tls_config: TlsConfig::default(),
            retry: RetryPolicy::default(),
            queue: QueueConfig::default(),
            compression: Compression::default(),
        }
    }

    /// The name used in logs and metrics: `name`, or the URL.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.url
        } else {
            &self.name
        }
    }
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("remote_timeout", &self.remote_timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("basic_auth", &self.basic_auth)
            .field("bearer_token", &self.bearer_token)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("tenant_id", &self.tenant_id)
            .field("tls_config", &self.tls_config)
            .field("retry", &self.retry)
            .field("queue", &self.queue)
            .field("compression", &self.compression)
            .finish()
    }
}

/// When [`Writer::append`](crate::Writer) returns (`"enqueue"`, `"wait_for_delivery"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AppendMode {
    /// Once the profile is queued for every endpoint (or dropped for one whose queue stayed
    /// full). Delivery failures are then reported through metrics and logs only. A slow or dead
    /// endpoint never delays the caller beyond the queue's [`FullPolicy`].
    #[default]
    Enqueue,
    /// Once every endpoint has delivered the profile or given up, with the failures joined — what
    /// Alloy does. Each endpoint still retries on its own, so a dead endpoint delays the caller
    /// but not the delivery to the healthy ones.
    WaitForDelivery,
}

/// The writer (the `pyroscope.write` component). Deserializes from Alloy's names: the repeatable
/// `endpoint` block is the `endpoint` list.
///
/// ```
/// let c: pyro_write::WriterConfig = serde_json::from_str(r#"{
///     "external_labels": {"cluster": "eu-1"},
///     "endpoint": [{"url": "http://localhost:4040"}]
/// }"#).unwrap();
/// assert_eq!(c.endpoints[0].url, "http://localhost:4040");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// Labels set on every profile, overriding the profile's own.
    pub external_labels: BTreeMap<String, String>,
    /// Where to send (Alloy's repeatable `endpoint` block). No endpoints: appends succeed and go
    /// nowhere.
    #[serde(rename = "endpoint")]
    pub endpoints: Vec<EndpointConfig>,
    /// When `append` returns.
    pub append_mode: AppendMode,
    /// Decode every pprof payload and check it ([`pyro_core::pprof::check_valid`]) before
    /// queueing it; a broken one is refused with [`AppendError::InvalidProfile`](pyro_core::AppendError)
    /// instead of being sent. Pyroscope answers a malformed payload with `unknown` (HTTP 500),
    /// which is retried, so without this check a broken profile is sent
    /// `max_backoff_retries + 1` times. Costs a gunzip and a decode per profile. Default `false`
    /// (but the [`limits`](Self::limits) decode and check every profile anyway unless all are
    /// off).
    pub check_profiles: bool,
    /// Pyroscope's ingest limits (its `limits` block: names and defaults of
    /// [`IngestLimits`](pyro_core::limits::IngestLimits)). Every profile is checked before it is
    /// queued; one that breaks a limit — which Pyroscope would answer with 400 — is refused with
    /// [`AppendError::InvalidProfile`](pyro_core::AppendError) naming the rule, counted in
    /// `pyroscope_write_dropped_profiles_total{endpoint="-",reason=<rule>}`, logged once per rule
    /// at `warn` (then at `debug`), and never sent or retried. Set them to the server's values
    /// when it overrides Pyroscope's defaults; [`IngestLimits::disabled`](pyro_core::limits::IngestLimits::disabled)
    /// turns the check off (and saves decoding every profile).
    pub limits: pyro_core::limits::IngestLimits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_alloys_names_and_refuses_the_rest_by_name() {
        let c: WriterConfig = serde_json::from_str(
            r#"{"endpoint": [{"url": "http://a", "name": "a", "remote_timeout": "2s",
                "headers": {"X-Scope-OrgID": "t"}, "bearer_token_file": "/run/token",
                "tls_config": {"insecure_skip_verify": true},
                "min_backoff_period": "1s", "max_backoff_period": "1m",
                "retry_on_http_429": true,
                "queue": {"max_profiles": 5, "when_full": "fail_fast"},
                "compression": "gzip"}],
                "append_mode": "wait_for_delivery", "check_profiles": true}"#,
        )
        .unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.remote_timeout, Duration::from_secs(2));
        assert_eq!(e.retry.min_backoff_period, Duration::from_secs(1));
        assert_eq!(e.retry.max_backoff_period, Duration::from_secs(60));
        assert_eq!(e.retry.max_backoff_retries, 10, "Alloy's default kept");
        assert!(e.retry.retry_on_http_429 && e.tls_config.insecure_skip_verify);
        assert_eq!(e.queue.max_profiles, 5);
        assert_eq!(e.queue.when_full, FullPolicy::FailFast);
        assert_eq!(e.compression, Compression::Gzip);
        assert_eq!(c.append_mode, AppendMode::WaitForDelivery);
        for (json, field) in [
            (r#"{"endpoints": []}"#, "endpoints"),
            (
                r#"{"endpoint": [{"url": "http://a", "oauth2": {}}]}"#,
                "oauth2",
            ),
            (
                r#"{"endpoint": [{"url": "http://a", "proxy_url": "http://p"}]}"#,
                "proxy_url",
            ),
            (
                r#"{"endpoint": [{"url": "http://a", "tls_config": {"ca_pem": "x"}}]}"#,
                "ca_pem",
            ),
            (r#"{"endpoint": [{"name": "no url"}]}"#, "url"),
            (
                r#"{"endpoint": [{"url": "http://a", "remote_timeout": "10"}]}"#,
                "10",
            ),
            (
                r#"{"endpoint": [{"url": "http://a", "queue": {"when_full": "later"}}]}"#,
                "later",
            ),
        ] {
            let e = serde_json::from_str::<WriterConfig>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut e = EndpointConfig::new("http://x");
        e.headers.insert("X-Api-Key".into(), "hunter2".into());
        e.bearer_token = Some("tok-secret".into());
        e.basic_auth = Some(BasicAuth {
            username: "u".into(),
            password: Some("pw-secret".into()),
            password_file: None,
        });
        let s = format!("{e:?} {:?}", WriterConfig::default());
        assert!(s.contains("X-Api-Key"), "{s}");
        for secret in ["hunter2", "tok-secret", "pw-secret"] {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
    }
}
