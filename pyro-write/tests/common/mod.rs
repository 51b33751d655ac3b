//! A small hyper server for the tests: records every request and answers as a handler says.
#![allow(dead_code, unreachable_pub, reason = "shared by several test binaries")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use pyro_core::pprof::ProfileBuilder;
use pyro_core::{Labels, Profile};
use pyro_write::proto::PushRequest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Captured {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    /// The body as sent (possibly gzip-compressed).
    pub body: Bytes,
}

impl Captured {
    /// The body, gunzipped when `Content-Encoding: gzip`.
    pub fn plain_body(&self) -> Vec<u8> {
        if self
            .headers
            .get("content-encoding")
            .is_some_and(|v| v == "gzip")
        {
            pyro_core::pprof::gunzip_capped(&self.body, 64 << 20).expect("gunzip request body")
        } else {
            self.body.to_vec()
        }
    }

    pub fn push_request(&self) -> PushRequest {
        PushRequest::decode(&self.plain_body()[..]).expect("decode PushRequest")
    }

    /// `(labels as "k=v" strings, raw profile, id)` of the single series/sample.
    pub fn single(&self) -> (Vec<String>, Bytes, String) {
        let req = self.push_request();
        assert_eq!(req.series.len(), 1);
        let s = &req.series[0];
        assert_eq!(s.samples.len(), 1);
        let labels = s
            .labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        (
            labels,
            s.samples[0].raw_profile.clone(),
            s.samples[0].id.clone(),
        )
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "application/proto".into())],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn connect_error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::json!({"code": code, "message": message}).to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

pub type Handler = Arc<dyn Fn(usize, &Captured) -> Reply + Send + Sync>;

/// A recording server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Captured>>>,
    /// TCP connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
    /// Set to `true` to drop every open connection.
    kill: tokio::sync::watch::Sender<bool>,
}

impl TestServer {
    /// Serves on an ephemeral loopback port.
    pub async fn start(
        handler: impl Fn(usize, &Captured) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(handler))
    }

    /// Serves on a given address (to bring a "down" endpoint back up).
    pub async fn start_at(
        addr: SocketAddr,
        handler: impl Fn(usize, &Captured) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, Arc::new(handler))
    }

    /// Always answers 200.
    pub async fn ok() -> Self {
        Self::start(|_, _| Reply::ok()).await
    }

    fn serve(listener: TcpListener, handler: Handler) -> Self {
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let reqs = requests.clone();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let conns = connections.clone();
        let (kill, killed) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reqs = reqs.clone();
                let handler = handler.clone();
                let mut killed = killed.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let reqs = reqs.clone();
                        let handler = handler.clone();
                        async move {
                            let at = Instant::now();
                            let path = req.uri().path().to_owned();
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let captured = Captured {
                                at,
                                path,
                                headers: parts.headers,
                                body,
                            };
                            let (index, reply) = {
                                let mut r = reqs.lock().unwrap();
                                let index = r.len();
                                r.push(captured.clone());
                                (index, handler(index, &captured))
                            };
                            let _ = index;
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut resp = Response::builder()
                                .status(StatusCode::from_u16(reply.status).unwrap());
                            for (k, v) in &reply.headers {
                                resp = resp.header(*k, v);
                            }
                            Ok::<_, hyper::Error>(
                                resp.body(Full::new(Bytes::from(reply.body))).unwrap(),
                            )
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = killed.wait_for(|k| *k) => {}
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            connections,
            task,
            kill,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until the server has seen `n` requests (panics after `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "server saw {} requests, expected {n} within {limit:?}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops accepting connections (open ones finish).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Goes down hard: stops accepting and drops every open connection (requests in flight
    /// get a reset), as a crashed server would.
    pub fn kill(&self) {
        self.task.abort();
        let _ = self.kill.send(true);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback address nothing listens on (bound, then released).
pub async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A small gzipped CPU profile whose frames name `tag`.
pub fn pprof(tag: &str) -> Bytes {
    let mut b = ProfileBuilder::cpu(97);
    let period = b.period();
    b.add_folded(&["main", "handler", tag], &[3 * period]);
    b.add_folded(&["main", "idle"], &[period]);
    Bytes::from(pyro_core::pprof::encode_gzip(&b.build(), 1))
}

/// A profile with a valid label set and an id.
pub fn profile(service: &str, id: &str) -> Profile {
    Profile::new(
        Labels::from_iter([("__name__", "process_cpu"), ("service_name", service)]),
        pprof(id),
    )
    .with_id(id)
}

/// Fast retries for tests.
pub fn fast_retry() -> pyro_write::RetryPolicy {
    pyro_write::RetryPolicy {
        min_backoff_period: Duration::from_millis(10),
        max_backoff_period: Duration::from_millis(50),
        max_backoff_retries: 10,
        retry_on_http_429: false,
    }
}

/// Reads a metric sample from the registry's text exposition.
pub fn metric(registry: &prometheus_client::registry::Registry, prefix: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
