//! [`PushSink`]: one Pyroscope endpoint, spoken to over the Connect `Push` API.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prost::Message as _;
use pyro_core::{Profile, Sink, SinkError, SinkErrorKind, async_trait};
use rustls::pki_types::ServerName;

use crate::config::{Compression, EndpointConfig};
use crate::error::{ConfigError, ConnectCode, PushError};
use crate::proto::PushRequest;
use crate::tls;

/// The Connect procedure path of `push.v1.PusherService/Push`.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// The tenant header.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// Error bodies are read up to this size; the rest is ignored.
const MAX_ERROR_BODY: usize = 64 << 10;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Credentials read from a file for every request (so rotation needs no restart).
#[derive(Clone, Debug)]
enum FileAuth {
    None,
    Basic { username: String, path: PathBuf },
    Bearer { path: PathBuf },
}

/// One Pyroscope endpoint: `POST {url}/push.v1.PusherService/Push` with a protobuf
/// `PushRequest` (`application/proto`, `Connect-Protocol-Version: 1`, gzip request body by
/// default), over a pooled keep-alive hyper client with rustls for `https`.
///
/// A `PushSink` makes one attempt per [`send`](Sink::send), bounded by `remote_timeout`, and
/// classifies failures: the [`SinkError`] it returns says whether a retry can help, carries the
/// server's `Retry-After`, and has a [`PushError`] as its source with the server's Connect code
/// and message. Retrying, queueing and label policy are the [`Writer`](crate::Writer)'s.
pub struct PushSink {
    name: String,
    uri: Uri,
    client: HttpClient,
    headers: HeaderMap,
    file_auth: FileAuth,
    timeout: Duration,
    compression: Compression,
}

impl fmt::Debug for PushSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSink")
            .field("name", &self.name)
            .field("uri", &self.uri)
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

fn header_value(endpoint: &str, name: &str, value: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value).map_err(|_| ConfigError::InvalidHeader {
        endpoint: endpoint.to_owned(),
        name: name.to_owned(),
    })
}

fn basic(username: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {token}")
}

impl PushSink {
    /// Builds the sink (HTTP client, TLS, static headers). Must be called inside a tokio runtime
    /// only if the pool's idle timer is to run; sending always needs one.
    pub fn new(config: &EndpointConfig) -> Result<Self, ConfigError> {
        let name = config.display_name().to_owned();
        let invalid_url = |reason: &str| ConfigError::InvalidUrl {
            endpoint: name.clone(),
            url: config.url.clone(),
            reason: reason.to_owned(),
        };
        let base: Uri = config
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid_url(&e.to_string()))?;
        match base.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(invalid_url("the scheme must be http or https")),
        }
        if base.host().is_none_or(str::is_empty) {
            return Err(invalid_url("the host is missing"));
        }
        if base.query().is_some() {
            return Err(invalid_url("a query string is not allowed"));
        }
        let path = format!("{}{PUSH_PATH}", base.path().trim_end_matches('/'));
        let uri = Uri::builder()
            .scheme(base.scheme_str().unwrap_or("http"))
            .authority(base.authority().map_or("", |a| a.as_str()))
            .path_and_query(path)
            .build()
            .map_err(|e| invalid_url(&e.to_string()))?;

        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let hname =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| ConfigError::InvalidHeader {
                    endpoint: name.clone(),
                    name: k.clone(),
                })?;
            let mut hv = header_value(&name, k, v)?;
            hv.set_sensitive(true);
            headers.insert(hname, hv);
        }
        if let Some(tenant) = &config.tenant_id {
            headers.insert(TENANT_HEADER, header_value(&name, TENANT_HEADER, tenant)?);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/proto"));
        headers.insert("connect-protocol-version", HeaderValue::from_static("1"));
        // The server may stop working on a push the client has given up on.
        let timeout_ms = config.remote_timeout.as_millis().clamp(1, 9_999_999_999);
        headers.insert(
            "connect-timeout-ms",
            header_value(&name, "connect-timeout-ms", &timeout_ms.to_string())?,
        );
        headers.insert("accept-encoding", HeaderValue::from_static("gzip"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("pyro-write/", env!("CARGO_PKG_VERSION"))),
        );

        let conflict = |message: &str| ConfigError::Conflict {
            endpoint: name.clone(),
            message: message.to_owned(),
        };
        let bearer = config.bearer_token.is_some() || config.bearer_token_file.is_some();
        if bearer && config.basic_auth.is_some() {
            return Err(conflict("basic_auth and bearer_token are exclusive"));
        }
        let mut file_auth = FileAuth::None;
        let mut authorization = None;
        match (&config.bearer_token, &config.bearer_token_file) {
            (Some(_), Some(_)) => {
                return Err(conflict("bearer_token and bearer_token_file are exclusive"));
            }
            (Some(token), None) => authorization = Some(format!("Bearer {}", token.expose())),
            (None, Some(path)) => file_auth = FileAuth::Bearer { path: path.clone() },
            (None, None) => {}
        }
        if let Some(auth) = &config.basic_auth {
            match (&auth.password, &auth.password_file) {
                (Some(_), Some(_)) => {
                    return Err(conflict(
                        "basic_auth: password and password_file are exclusive",
                    ));
                }
                (Some(pw), None) => authorization = Some(basic(&auth.username, pw.expose())),
                (None, Some(path)) => {
                    file_auth = FileAuth::Basic {
                        username: auth.username.clone(),
                        path: path.clone(),
                    };
                }
                (None, None) => authorization = Some(basic(&auth.username, "")),
            }
        }
        if let Some(a) = authorization {
            let mut v = header_value(&name, "authorization", &a)?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if config.remote_timeout.is_zero() {
            return Err(ConfigError::InvalidLimit {
                endpoint: name,
                message: "remote_timeout must be positive".into(),
            });
        }

        let tls = tls::client_config(&name, &config.tls_config)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        http.set_connect_timeout(Some(config.remote_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match &config.tls_config.server_name {
            Some(sn) => {
                let sn = ServerName::try_from(sn.clone())
                    .map_err(|_| conflict("tls: server_name is not a valid DNS name or IP"))?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(sn))
            }
            None => builder,
        };
        let connector = builder.enable_all_versions().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            name,
            uri,
            client,
            headers,
            file_auth,
            timeout: config.remote_timeout,
            compression: config.compression,
        })
    }

    /// The full push URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the body for `profile` is gzip-compressed under this sink's configuration.
    pub fn compresses(&self, profile: &Profile) -> bool {
        match self.compression {
            Compression::Gzip => true,
            Compression::None => false,
            Compression::Auto => !profile.is_gzipped(),
        }
    }

    /// Encodes the request body for `profile`, gzip-compressed when
    /// [`compresses`](Self::compresses) says so.
    pub fn encode_body(&self, profile: &Profile) -> Bytes {
        let plain = PushRequest::from_profile(profile).encode_to_vec();
        if !self.compresses(profile) {
            return Bytes::from(plain);
        }
        Bytes::from(pyro_core::pprof::gzip(&plain, 1))
    }

    fn read_secret(&self, path: &PathBuf) -> Result<String, PushError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| PushError::Credentials {
                endpoint: self.name.clone(),
                path: path.clone(),
                source,
            })
    }

    fn request(&self, body: Bytes, gzip: bool) -> Result<Request<Full<Bytes>>, PushError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .body(Full::new(body))
            .map_err(|source| PushError::Request {
                endpoint: self.name.clone(),
                source,
            })?;
        *req.headers_mut() = self.headers.clone();
        if gzip {
            req.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let auth = match &self.file_auth {
            FileAuth::None => None,
            FileAuth::Basic { username, path } => Some(basic(username, &self.read_secret(path)?)),
            FileAuth::Bearer { path } => Some(format!("Bearer {}", self.read_secret(path)?)),
        };
        if let Some(a) = auth {
            let mut v = HeaderValue::from_str(&a).map_err(|e| PushError::Request {
                endpoint: self.name.clone(),
                source: e.into(),
            })?;
            v.set_sensitive(true);
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        Ok(req)
    }

    /// Makes one push attempt.
    pub async fn push(&self, profile: &Profile) -> Result<(), PushError> {
        let req = self.request(self.encode_body(profile), self.compresses(profile))?;
        let attempt = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|source| PushError::Transport {
                    endpoint: self.name.clone(),
                    source,
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ERROR_BODY).collect().await;
            let body = match body {
                Ok(b) => b.to_bytes(),
                // The push was accepted; an odd response body does not make it fail (a retry
                // would store the profile twice).
                Err(_) if parts.status == http::StatusCode::OK => Bytes::new(),
                Err(source) => {
                    return Err(PushError::Response {
                        endpoint: self.name.clone(),
                        source,
                    });
                }
            };
            Ok::<_, PushError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| PushError::Timeout {
                endpoint: self.name.clone(),
                timeout: self.timeout,
            })??;
        if parts.status == http::StatusCode::OK {
            return Ok(());
        }
        Err(self.decode_error(parts.status.as_u16(), &parts.headers, &body))
    }

    fn decode_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> PushError {
        let gzipped = headers
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let body = if gzipped {
            pyro_core::pprof::gunzip_capped(body, MAX_ERROR_BODY).unwrap_or_default()
        } else {
            body.to_vec()
        };
        let (code, message) = parse_connect_error(&body).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(512).collect();
            (ConnectCode::from_http_status(status), text)
        });
        PushError::Status {
            endpoint: self.name.clone(),
            status,
            code,
            message,
            retry_after: headers.get(RETRY_AFTER).and_then(parse_retry_after),
        }
    }
}

/// Parses a Connect error body `{"code": "...", "message": "..."}`.
fn parse_connect_error(body: &[u8]) -> Option<(ConnectCode, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = ConnectCode::from_name(v.get("code")?.as_str()?)?;
    let message = v
        .get("message")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[async_trait]
impl Sink for PushSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, profile: &Profile) -> Result<(), SinkError> {
        self.push(profile)
            .await
            .map_err(|e| SinkError::new(self.name.clone(), sink_error_kind(&e), e))
    }
}

/// What the writer should do with a failed push: 429/`resource_exhausted` is rate limiting,
/// other retryable codes are retried, refused content is invalid input, the rest permanent.
pub(crate) fn sink_error_kind(e: &PushError) -> SinkErrorKind {
    match e.code() {
        ConnectCode::ResourceExhausted => SinkErrorKind::RateLimited {
            retry_after: e.retry_after(),
        },
        _ if e.is_retryable() => SinkErrorKind::Retryable {
            retry_after: e.retry_after(),
        },
        ConnectCode::InvalidArgument
        | ConnectCode::FailedPrecondition
        | ConnectCode::OutOfRange => SinkErrorKind::InvalidInput,
        _ => SinkErrorKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers() {
        let mut c = EndpointConfig::new("http://localhost:4040/prefix/");
        c.tenant_id = Some("t1".into());
        c.headers.insert("X-Extra".into(), "v".into());
        let s = PushSink::new(&c).unwrap();
        assert_eq!(
            s.uri().to_string(),
            "http://localhost:4040/prefix/push.v1.PusherService/Push"
        );
        assert_eq!(s.headers[TENANT_HEADER], "t1");
        assert_eq!(s.headers["connect-protocol-version"], "1");
        assert_eq!(s.headers["connect-timeout-ms"], "10000");
        assert_eq!(s.headers[CONTENT_TYPE], "application/proto");
        assert_eq!(s.headers["x-extra"], "v");

        for bad in ["localhost:4040", "ftp://x", "http://", "http://x/?a=b"] {
            assert!(
                matches!(
                    PushSink::new(&EndpointConfig::new(bad)),
                    Err(ConfigError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
        let mut c = EndpointConfig::new("http://x");
        c.bearer_token = Some("a".into());
        c.basic_auth = Some(crate::BasicAuth::default());
        assert!(matches!(
            PushSink::new(&c),
            Err(ConfigError::Conflict { .. })
        ));
    }

    #[test]
    fn auth_headers() {
        let mut c = EndpointConfig::new("http://x");
        c.basic_auth = Some(crate::BasicAuth {
            username: "user".into(),
            password: Some("pass".into()),
            password_file: None,
        });
        let s = PushSink::new(&c).unwrap();
        // base64("user:pass")
        assert_eq!(s.headers[AUTHORIZATION], "Basic dXNlcjpwYXNz");
        assert!(!format!("{s:?}").contains("dXNlcjpwYXNz"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok123\n").unwrap();
        let mut c = EndpointConfig::new("http://x");
        c.bearer_token_file = Some(path.clone());
        let s = PushSink::new(&c).unwrap();
        let req = s.request(Bytes::new(), false).unwrap();
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer tok123");
        std::fs::remove_file(&path).unwrap();
        let e = s.request(Bytes::new(), false).unwrap_err();
        assert!(matches!(e, PushError::Credentials { .. }));
        assert!(e.is_retryable());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            parse_connect_error(br#"{"code":"invalid_argument","message":"invalid labels"}"#),
            Some((ConnectCode::InvalidArgument, "invalid labels".into()))
        );
        assert_eq!(parse_connect_error(b"<html>502</html>"), None);
        assert_eq!(parse_connect_error(br#"{"code":"nope"}"#), None);
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}
