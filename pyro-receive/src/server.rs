//! The HTTP server: [`ReceiveConfig`], [`Server`], [`ServerHandle`], routing and limits.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use http::header::{ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use pyro_core::pprof::{self, DEFAULT_MAX_DECODED_SIZE, PprofError};
use pyro_core::{DynReceiver, Fanout, LifecycleError, Profile, Receiver as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Code, RequestError, ServeError};
use crate::ingest::{IngestRequest, parse_ingest_with};
use crate::limits::{Checked, IngestLimits};
use crate::metrics::{EndpointLabels, ReceiveMetrics, RefusedLabels, RequestLabels};
use crate::push::{PushEncoding, parse_push_with};

/// Server settings, named after Alloy's `pyroscope.receive_http` arguments (the `http` block,
/// `graceful_shutdown_timeout`), with its defaults where it has one, plus pyro's limits. Plain
/// serde data: unknown fields (and Alloy arguments pyro does not implement, such as
/// `http.server_write_timeout`, `http.tls` or the `grpc` block) are refused by name. The
/// receivers it forwards to are given to [`Server::new`].
///
/// ```
/// let c: pyro_receive::ReceiveConfig = serde_json::from_str(
///     r#"{"http": {"listen_address": "127.0.0.1", "listen_port": 4040}, "graceful_shutdown_timeout": "5s"}"#,
/// ).unwrap();
/// assert_eq!(c.http.listen_port, 4040);
/// assert_eq!(c.graceful_shutdown_timeout, std::time::Duration::from_secs(5));
/// assert!(serde_json::from_str::<pyro_receive::ReceiveConfig>(r#"{"http": {"server_write_timeout": "1s"}}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiveConfig {
    /// The `http` block: where and how connections are accepted.
    pub http: HttpConfig,
    /// `graceful_shutdown_timeout`: after [`ServerHandle::stop`], how long in-flight
    /// requests may take to finish before their connections are dropped (the shutdown's own
    /// deadline caps it too). Default 30 s.
    #[serde(with = "pyro_core::config::duration")]
    pub graceful_shutdown_timeout: Duration,
    /// The largest request body read, in bytes as sent (compressed). Larger bodies get 413
    /// without being read when `Content-Length` says so, or as soon as the limit is crossed.
    /// Default 16 MiB. (Alloy has no limit; Pyroscope's is 256 MiB.) pyro-only.
    pub max_request_body_size: usize,
    /// The largest decompressed size of a body sent with `Content-Encoding: gzip` and of each
    /// pprof payload, in bytes. Decompression stops there (gzip bombs cost at most this much
    /// memory). Default 16 MiB ([`DEFAULT_MAX_DECODED_SIZE`]). pyro-only.
    ///
    /// Together these bound one request's memory to about `max_request_body_size + 2 ×
    /// max_decoded_size` (the inflated body and the largest payload decoded from it); the
    /// server's peak is that times `max_concurrent_requests`.
    pub max_decoded_size: usize,
    /// The most requests parsed and forwarded at once (across all connections); a request
    /// beyond waits for a slot up to `server_read_timeout`, then gets 429 `resource_exhausted`
    /// (retryable). `0` means no limit. Default 64. pyro-only.
    ///
    /// Bodies are read *before* a slot is taken, against a byte budget of
    /// `max_concurrent_requests × max_request_body_size` taken as the bytes arrive: a client
    /// trickling a body (slowloris) holds only the bytes it sent, never a slot, so it cannot
    /// starve the others; a body that cannot get budget within `server_read_timeout` is
    /// refused with 429. Together the two bound the server's memory.
    pub max_concurrent_requests: usize,
    /// Pyroscope's ingest limits (its `limits` block, its names and defaults): every received
    /// profile is checked against them and a profile that breaks one is refused with 400
    /// `invalid_argument` naming the rule, its neighbours in the request still forwarded (see
    /// [`crate::limits`]).
    pub limits: IngestLimits,
}

/// The `http` block of [`ReceiveConfig`] (Alloy's `http` block, the parts pyro implements).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `http.listen_address`: the address to bind; `""` means all IPv4 interfaces. Default `""`.
    pub listen_address: String,
    /// `http.listen_port`. Default `8080`; `0` picks a free port (read it from
    /// [`ServerHandle::local_addr`]).
    pub listen_port: u16,
    /// `http.conn_limit`: the most connections served at once; further clients wait in the
    /// kernel's accept queue. `0` means no limit. Default `16384` (Alloy's value in code).
    pub conn_limit: usize,
    /// `http.server_read_timeout`: the time a client has to send a request's headers (a total
    /// deadline, not reset by each byte: a client trickling headers is cut when it passes), and
    /// again its body (408 when it passes). It also closes keep-alive connections idle that
    /// long, as hyper's header timer starts when the connection waits for a request: this is
    /// the idle timeout too (Alloy's separate `server_idle_timeout`, 120 s, is not
    /// implemented). Default 30 s.
    #[serde(with = "pyro_core::config::duration")]
    pub server_read_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen_address: String::new(),
            listen_port: 8080,
            conn_limit: 16_384,
            server_read_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for ReceiveConfig {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            graceful_shutdown_timeout: Duration::from_secs(30),
            max_request_body_size: 16 << 20,
            max_decoded_size: DEFAULT_MAX_DECODED_SIZE,
            max_concurrent_requests: 64,
            limits: IngestLimits::default(),
        }
    }
}

/// Decompresses a request body per its `Content-Encoding`: absent, empty or `identity` leave
/// it as is, `gzip` is inflated up to `max_decoded_size` bytes (413 beyond, 400 when corrupt);
/// anything else is `unimplemented` (501), as in Connect. Empty bodies are never inflated.
pub fn decode_content_encoding(
    content_encoding: Option<&str>,
    body: Bytes,
    max_decoded_size: usize,
) -> Result<Bytes, RequestError> {
    let encoding = content_encoding.unwrap_or("").trim();
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") || body.is_empty() {
        return Ok(body);
    }
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(unknown_encoding(encoding));
    }
    match pprof::gunzip_capped(&body, max_decoded_size) {
        Ok(plain) => Ok(plain.into()),
        Err(e @ PprofError::TooLarge { .. }) => Err(RequestError::too_large(format!(
            "gzip request body: {e} (max_decoded_size)"
        ))),
        Err(e) => Err(RequestError::invalid(format!("gzip request body: {e}"))),
    }
}

/// Whether `Content-Encoding` is gzip; `unimplemented` for anything but gzip and identity.
fn is_gzip_encoding(content_encoding: Option<&str>) -> Result<bool, RequestError> {
    let e = content_encoding.unwrap_or("").trim();
    if e.eq_ignore_ascii_case("gzip") {
        Ok(true)
    } else if e.is_empty() || e.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(unknown_encoding(e))
    }
}

fn unknown_encoding(encoding: &str) -> RequestError {
    RequestError::new(
        Code::Unimplemented,
        format!("unknown compression {encoding:?}: supported encodings are gzip, identity"),
    )
}

/// Accepts profiles over HTTP and forwards them to receivers, like Alloy's
/// `pyroscope.receive_http`:
///
/// - `POST /push.v1.PusherService/Push` (any path prefix): Connect unary, `application/proto`
///   or `application/json`, `Content-Encoding: gzip` or identity.
/// - `POST /ingest` (also `/pyroscope/ingest`): the legacy API (see [`crate::ingest`]).
///
/// Every profile is checked before anything is forwarded (see [`crate::push::parse_push`] and
/// [`crate::ingest::parse_ingest`]); then all profiles of a request are appended concurrently
/// to the receiver, and the request succeeds when all were accepted.
#[derive(Debug)]
pub struct Server {
    config: ReceiveConfig,
    receiver: Fanout,
    metrics: ReceiveMetrics,
}

impl Server {
    /// A server forwarding to `forward_to` (all of them, concurrently, through a [`Fanout`]).
    pub fn new(config: ReceiveConfig, forward_to: Vec<DynReceiver>) -> Self {
        Self::with_fanout(config, Fanout::new(forward_to))
    }

    /// A server forwarding to a [`Fanout`] the host built (named children, metrics attached).
    pub fn with_fanout(config: ReceiveConfig, fanout: Fanout) -> Self {
        Self {
            config,
            receiver: fanout,
            metrics: ReceiveMetrics::default(),
        }
    }

    /// Counts into `metrics` (see [`ReceiveMetrics::register`]).
    #[must_use]
    pub fn with_metrics(mut self, metrics: ReceiveMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Binds the listen address now (so a port conflict is reported here, and port 0 is
    /// resolved) and returns a handle and the future that serves. The host spawns the future
    /// on its tokio runtime; it completes after [`ServerHandle::stop`], once in-flight
    /// requests have finished or `graceful_shutdown_timeout` has passed.
    pub fn bind(
        self,
    ) -> Result<
        (
            ServerHandle,
            impl Future<Output = Result<(), ServeError>> + Send + 'static,
        ),
        ServeError,
    > {
        let host = if self.config.http.listen_address.is_empty() {
            "0.0.0.0"
        } else {
            self.config.http.listen_address.as_str()
        };
        let address = format!("{host}:{}", self.config.http.listen_port);
        let bind_err = |source| ServeError::Bind {
            address: address.clone(),
            source,
        };
        let listener =
            std::net::TcpListener::bind((host, self.config.http.listen_port)).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let token = CancellationToken::new();
        let (done_tx, done) = watch::channel(false);
        let handle = ServerHandle {
            local_addr,
            token: token.clone(),
            done,
            forward_to: self.receiver.clone(),
        };
        tracing::info!(address = %local_addr, "pyroscope receiver listening");
        let serve = self.serve(listener, local_addr, token);
        Ok((handle, async move {
            let served = serve.await;
            let _ = done_tx.send(true);
            served
        }))
    }

    async fn serve(
        self,
        listener: std::net::TcpListener,
        local_addr: SocketAddr,
        token: CancellationToken,
    ) -> Result<(), ServeError> {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| ServeError::Listener {
                address: local_addr,
                source,
            })?;
        let limit = match self.config.http.conn_limit {
            0 => Semaphore::MAX_PERMITS,
            n => n.min(Semaphore::MAX_PERMITS),
        };
        self.metrics
            .connections_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        let slots = Arc::new(Semaphore::new(limit));
        let requests = match self.config.max_concurrent_requests {
            0 => Semaphore::MAX_PERMITS,
            n => n.min(Semaphore::MAX_PERMITS),
        };
        let body_budget = match self.config.max_concurrent_requests {
            0 => Semaphore::MAX_PERMITS,
            n => n
                .saturating_mul(self.config.max_request_body_size.max(1))
                .min(Semaphore::MAX_PERMITS),
        };
        let state = Arc::new(State {
            requests: Semaphore::new(requests),
            body_budget: Arc::new(Semaphore::new(body_budget)),
            config: self.config,
            receiver: self.receiver,
            metrics: self.metrics,
        });
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = token.cancelled() => break,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, address = %local_addr, "accept failed");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                            () = token.cancelled() => break,
                        }
                    }
                },
                () = token.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let st = state.clone();
            let service = service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, Infallible>(st.handle(req).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(state.config.http.server_read_timeout)
                .keep_alive(true);
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            let gauge = ConnectionGauge::new(&state.metrics);
            connections.spawn(async move {
                let _slot = permit;
                let _gauge = gauge;
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            });
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        tracing::info!(address = %local_addr, in_flight = connections.len(), "pyroscope receiver shutting down");
        let timeout = state.config.graceful_shutdown_timeout;
        if tokio::time::timeout(timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(address = %local_addr, ?timeout, "graceful shutdown timed out; dropping connections");
            connections.abort_all();
        }
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

struct ConnectionGauge(prometheus_client::metrics::gauge::Gauge);

impl ConnectionGauge {
    fn new(metrics: &ReceiveMetrics) -> Self {
        metrics.connections.inc();
        Self(metrics.connections.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Controls a running [`Server`]. Cheap to clone. Follows the
/// [lifecycle](pyro_core::lifecycle) of every pyro stage: [`shutdown`](Self::shutdown) stops
/// the server, waits for the requests in flight, then shuts down the receivers it forwards to.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    token: CancellationToken,
    /// `true` once the serve future has finished.
    done: watch::Receiver<bool>,
    forward_to: Fanout,
}

/// The stage's name in lifecycle errors.
const STAGE: &str = "pyroscope.receive_http";

impl ServerHandle {
    /// The bound address (with the real port when `listen_port` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and lets in-flight requests finish (up to
    /// `graceful_shutdown_timeout`); the serve future then completes. Returns at once and does
    /// not touch the receivers downstream; [`shutdown`](Self::shutdown) waits and does.
    /// Idempotent.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// Whether [`stop`](Self::stop) or [`shutdown`](Self::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Flushes the receivers downstream (the server itself holds nothing between requests).
    pub async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.forward_to.flush(deadline).await
    }

    /// Stops accepting connections, waits (until `deadline`) for the requests in flight to be
    /// answered, then shuts down the receivers it forwards to. Idempotent.
    pub async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.stop();
        let mut done = self.done.clone();
        // A serve future that was dropped (or never spawned) has nothing in flight.
        let served = tokio::time::timeout_at(deadline.into(), done.wait_for(|d| *d))
            .await
            .map(|_| ());
        let downstream = self.forward_to.shutdown(deadline).await;
        match served {
            Ok(_) => downstream,
            Err(_) => LifecycleError::join([
                Err(LifecycleError::DeadlineExceeded {
                    stage: STAGE.into(),
                    pending: 0,
                }),
                downstream,
            ]),
        }
    }
}

#[pyro_core::async_trait]
impl pyro_core::Stage for ServerHandle {
    async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError> {
        ServerHandle::flush(self, deadline).await
    }

    async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        ServerHandle::shutdown(self, deadline).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Push,
    Ingest,
    Other,
}

impl Endpoint {
    fn of(path: &str) -> Self {
        if path.ends_with("/push.v1.PusherService/Push") {
            Self::Push
        } else if path == "/ingest" || path == "/pyroscope/ingest" {
            Self::Ingest
        } else {
            Self::Other
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Ingest => "ingest",
            Self::Other => "other",
        }
    }
}

type Resp = Response<Full<Bytes>>;

struct State {
    /// Slots for requests being parsed and forwarded (`max_concurrent_requests`).
    requests: Semaphore,
    /// Bytes of request bodies held (read, not yet parsed), taken as they arrive.
    body_budget: Arc<Semaphore>,
    config: ReceiveConfig,
    receiver: Fanout,
    metrics: ReceiveMetrics,
}

/// Bodies above this size are parsed on the blocking pool, off the async workers.
const INLINE_PARSE_LIMIT: usize = 256 << 10;

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let start = Instant::now();
        let endpoint = Endpoint::of(req.uri().path());
        let method_ok = req.method() == Method::POST;
        let result = match endpoint {
            Endpoint::Other => Err(RequestError::new(
                Code::NotFound,
                format!(
                    "no such endpoint {:?}: use POST /push.v1.PusherService/Push or POST /ingest",
                    req.uri().path()
                ),
            )),
            _ if !method_ok => Err(RequestError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                ..RequestError::new(
                    Code::Unimplemented,
                    format!("method {} is not allowed: use POST", req.method()),
                )
            }),
            Endpoint::Push => self.push(req).await,
            Endpoint::Ingest => self.ingest(req).await,
        };
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(endpoint = endpoint.name(), status = e.status.as_u16(), code = %e.code, message = %e.message, "request refused");
                error_response(endpoint, &e)
            }
        };
        let labels = EndpointLabels {
            endpoint: endpoint.name().to_owned(),
        };
        self.metrics
            .duration
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: labels.endpoint,
                status_code: response.status().as_str().to_owned(),
            })
            .inc();
        response
    }

    /// Waits for a request slot, up to `server_read_timeout`.
    async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, RequestError> {
        let timeout = self.config.http.server_read_timeout;
        match tokio::time::timeout(timeout, self.requests.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(RequestError::new(
                Code::ResourceExhausted,
                format!(
                    "server busy: {} requests in flight (max_concurrent_requests) for {timeout:?}; retry later",
                    self.config.max_concurrent_requests
                ),
            )),
        }
    }

    /// Reads a body within `server_read_timeout`, taking budget for each chunk as it arrives;
    /// the budget is held (the returned permit) until the request is answered.
    async fn read_body(
        &self,
        endpoint: Endpoint,
        body: Incoming,
        declared: Option<u64>,
    ) -> Result<(Bytes, Option<OwnedSemaphorePermit>), RequestError> {
        let max = self.config.max_request_body_size;
        let too_large = || {
            RequestError::too_large(format!(
                "request body is larger than the limit of {max} bytes (max_request_body_size)"
            ))
        };
        if declared.is_some_and(|len| len > max as u64) {
            return Err(too_large());
        }
        let timeout = self.config.http.server_read_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || RequestError {
            status: StatusCode::REQUEST_TIMEOUT,
            ..RequestError::new(
                Code::DeadlineExceeded,
                format!("request body not received within {timeout:?} (server_read_timeout)"),
            )
        };
        let mut body = Limited::new(body, max);
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(timed_out()),
                Ok(None) => break,
                Ok(Some(Err(e))) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return Err(too_large());
                }
                Ok(Some(Err(e))) => {
                    return Err(RequestError::invalid(format!("reading request body: {e}")));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            // Chunks are at most `max` bytes (Limited), which fits the budget's u32 permits
            // unless the limit itself is beyond 4 GiB.
            let want = u32::try_from(data.len()).map_err(|_| too_large())?;
            let permit = match tokio::time::timeout_at(
                deadline,
                self.body_budget.clone().acquire_many_owned(want),
            )
            .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    return Err(RequestError::new(
                        Code::ResourceExhausted,
                        format!(
                            "server busy: request bodies in flight use the whole body budget (max_concurrent_requests × max_request_body_size) for {timeout:?}; retry later"
                        ),
                    ));
                }
            };
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            len += data.len();
            chunks.push(data);
        }
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(len);
                for c in chunks {
                    all.extend_from_slice(&c);
                }
                all.freeze()
            }
        };
        self.metrics
            .received_bytes
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.name().to_owned(),
            })
            .inc_by(body.len() as u64);
        Ok((body, held))
    }

    async fn push(&self, req: Request<Incoming>) -> Result<Resp, RequestError> {
        let (parts, body) = req.into_parts();
        let content_type = header(&parts.headers, CONTENT_TYPE);
        let encoding = content_type
            .and_then(PushEncoding::from_content_type)
            .ok_or_else(|| {
                RequestError::unsupported_media_type(format!(
                    "unsupported Content-Type {:?}: use application/proto or application/json",
                    content_type.unwrap_or("")
                ))
            })?;
        if let Some(v) = header(&parts.headers, "connect-protocol-version")
            && v.trim() != "1"
        {
            return Err(RequestError::invalid(format!(
                "Connect-Protocol-Version must be \"1\", got {v:?}"
            )));
        }
        let content_encoding = header(&parts.headers, CONTENT_ENCODING).map(str::to_owned);
        let gzip = is_gzip_encoding(content_encoding.as_deref())?;
        let (body, _budget) = self
            .read_body(Endpoint::Push, body, content_length(&parts.headers))
            .await?;
        let _slot = self.slot().await?;
        let max = self.config.max_decoded_size;
        // A gzip body is estimated at 8x its size when picking where to parse it.
        let len = body.len().saturating_mul(if gzip { 8 } else { 1 });
        let limits = self.config.limits.clone();
        let parse = move || {
            let body = decode_content_encoding(content_encoding.as_deref(), body, max)?;
            parse_push_with(body, encoding, max, &limits, SystemTime::now())
        };
        let checked = run_parser(len, parse).await?;
        self.forward_checked(Endpoint::Push, checked).await?;
        let mut response = Response::new(Full::new(Bytes::from_static(encoding.empty_response())));
        let h = response.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        );
        h.insert("accept-encoding", HeaderValue::from_static("gzip"));
        Ok(response)
    }

    async fn ingest(&self, req: Request<Incoming>) -> Result<Resp, RequestError> {
        let (parts, body) = req.into_parts();
        let content_encoding = header(&parts.headers, CONTENT_ENCODING).map(str::to_owned);
        let gzip = is_gzip_encoding(content_encoding.as_deref())?;
        let (body, _budget) = self
            .read_body(Endpoint::Ingest, body, content_length(&parts.headers))
            .await?;
        let _slot = self.slot().await?;
        let query = parts.uri.query().unwrap_or("").to_owned();
        let content_type = header(&parts.headers, CONTENT_TYPE).map(str::to_owned);
        let max = self.config.max_decoded_size;
        // A gzip body is estimated at 8x its size when picking where to parse it.
        let len = body.len().saturating_mul(if gzip { 8 } else { 1 });
        let limits = self.config.limits.clone();
        let parse = move || {
            let body = decode_content_encoding(content_encoding.as_deref(), body, max)?;
            parse_ingest_with(
                &IngestRequest {
                    query: &query,
                    content_type: content_type.as_deref(),
                    body,
                },
                max,
                &limits,
                SystemTime::now(),
            )
        };
        let checked = run_parser(len, parse).await?;
        self.forward_checked(Endpoint::Ingest, checked).await?;
        Ok(Response::new(Full::new(Bytes::new())))
    }

    /// Forwards the profiles that passed the limits, then answers for the refused ones: a
    /// refusal is bad input and wins over a forwarding failure (see [`crate::limits`]).
    async fn forward_checked(
        &self,
        endpoint: Endpoint,
        checked: Checked,
    ) -> Result<(), RequestError> {
        let refusal = checked.refusal();
        for r in &checked.refused {
            self.metrics
                .profiles_refused
                .get_or_create(&RefusedLabels {
                    endpoint: endpoint.name().to_owned(),
                    reason: r.error.rule().as_str().to_owned(),
                })
                .inc();
        }
        let forwarded = if checked.profiles.is_empty() {
            Ok(())
        } else {
            self.forward(endpoint, checked.profiles).await
        };
        match refusal {
            Some(e) => Err(e),
            None => forwarded,
        }
    }

    async fn forward(
        &self,
        endpoint: Endpoint,
        profiles: Vec<Profile>,
    ) -> Result<(), RequestError> {
        let results = join_all(profiles.into_iter().map(|p| self.receiver.append(p))).await;
        let accepted = results.iter().filter(|r| r.is_ok()).count();
        self.metrics
            .profiles_forwarded
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.name().to_owned(),
            })
            .inc_by(accepted as u64);
        match pyro_core::AppendError::join(results.into_iter().filter_map(Result::err)) {
            None => Ok(()),
            Some(e) => {
                tracing::warn!(endpoint = endpoint.name(), error = %e, kind = ?e.kind(), "forwarding received profiles failed");
                Err(RequestError::from_append(&e))
            }
        }
    }
}

/// Runs a body parser: inline for small bodies, on the blocking pool for large ones (parsing
/// megabytes would otherwise stall the async worker and every connection on it).
async fn run_parser<T: Send + 'static>(
    body_len: usize,
    parse: impl FnOnce() -> Result<T, RequestError> + Send + 'static,
) -> Result<T, RequestError> {
    if body_len <= INLINE_PARSE_LIMIT {
        return parse();
    }
    tokio::task::spawn_blocking(parse)
        .await
        .unwrap_or_else(|e| {
            Err(RequestError::new(
                Code::Internal,
                format!("parser failed: {e}"),
            ))
        })
}

fn header(headers: &http::HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    header(headers, CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

fn error_response(endpoint: Endpoint, e: &RequestError) -> Resp {
    let mut response = Response::new(Full::new(Bytes::from(e.to_json())));
    *response.status_mut() = e.status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE && endpoint == Endpoint::Push {
        h.insert(
            "accept-post",
            HeaderValue::from_static("application/json, application/proto"),
        );
    }
    response
}
