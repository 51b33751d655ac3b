//! Shared test fixtures: a server on a free loopback port that collects what it receives, and
//! a small HTTP client.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pyro_core::{AppendError, DynReceiver, Profile, Receiver};
use pyro_receive::{HttpConfig, ReceiveConfig, ReceiveMetrics, ServeError, Server, ServerHandle};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Collects every profile it is handed; optionally fails or waits first.
#[derive(Debug, Default)]
pub struct Collect {
    /// What was accepted.
    pub recorded: pyro_testkit::Recorder,
    /// When set, `append` fails with this.
    pub fail: Mutex<Option<fn() -> AppendError>>,
    /// When set, `append` waits for a permit here first.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Tells a test that `append` was entered.
    pub entered: Notify,
}

#[pyro_core::async_trait]
impl Receiver for Collect {
    async fn append(&self, profile: Profile) -> Result<(), AppendError> {
        self.entered.notify_one();
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await.expect("gate open");
        }
        if let Some(f) = *self.fail.lock().unwrap() {
            return Err(f());
        }
        self.recorded.append(profile).await
    }
}

impl Collect {
    pub fn profiles(&self) -> Vec<Profile> {
        self.recorded.profiles()
    }

    /// Waits until a profile satisfying `pred` has arrived, or `timeout` passed.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Profile) -> bool,
    ) -> Option<Profile> {
        self.recorded.wait_for(timeout, pred).await
    }
}

pub struct Running {
    pub handle: ServerHandle,
    pub task: JoinHandle<Result<(), ServeError>>,
    pub collect: Arc<Collect>,
    pub base: String,
}

pub fn loopback(config: ReceiveConfig) -> ReceiveConfig {
    ReceiveConfig {
        http: HttpConfig {
            listen_address: "127.0.0.1".into(),
            listen_port: 0,
            ..config.http
        },
        ..config
    }
}

pub fn start_with(config: ReceiveConfig, collect: Collect, metrics: ReceiveMetrics) -> Running {
    let collect = Arc::new(collect);
    let (handle, serve) = Server::new(loopback(config), vec![collect.clone() as DynReceiver])
        .with_metrics(metrics)
        .bind()
        .expect("bind");
    let base = format!("http://{}", handle.local_addr());
    Running {
        handle,
        task: tokio::spawn(serve),
        collect,
        base,
    }
}

/// A server without the ingestion window, for tests sending the Go runtime's profiles in
/// `testdata/` (recorded days ago: Pyroscope would refuse them as too old).
pub fn start_without_window() -> Running {
    start_with(
        ReceiveConfig {
            limits: pyro_core::limits::IngestLimits {
                reject_older_than: Duration::ZERO,
                ..Default::default()
            },
            ..ReceiveConfig::default()
        },
        Collect::default(),
        ReceiveMetrics::default(),
    )
}

pub fn start() -> Running {
    start_with(
        ReceiveConfig::default(),
        Collect::default(),
        ReceiveMetrics::default(),
    )
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .expect("request");
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    request("POST", url, headers, body).await
}

/// Whether an SDK package is installed (`probe` ran successfully). When it is not, the test is
/// skipped with a message, or fails under `PYRO_REQUIRE_TOOLS=1` (set by CI).
/// Whether an SDK probe succeeded (see [`pyro_testkit::sdk::installed`]).
pub fn sdk_installed(what: &str, probe: &std::process::Output, install: &str) -> bool {
    pyro_testkit::sdk::installed(what, probe, install)
}

/// Waits (10 s) for a profile of `service` whose stacks contain `function`, the busy function of
/// an SDK test program; panics listing what arrived instead.
pub async fn wait_for_sdk_profile(collect: &Collect, service: &str, function: &str) -> Profile {
    let found = collect
        .wait_for(Duration::from_secs(10), |p| {
            p.service_name() == Some(service)
                && pyro_core::pprof::decode(&p.raw, 1 << 24).is_ok_and(|pp| {
                    pyro_core::pprof::folded(&pp, pp.default_sample_index())
                        .iter()
                        .any(|st| st.frames.iter().any(|f| f.contains(function)))
                })
        })
        .await;
    found.unwrap_or_else(|| {
        let got: Vec<String> = collect
            .profiles()
            .iter()
            .map(|p| p.labels.to_string())
            .collect();
        panic!("no profile with {function} from {service}; got {got:?}")
    })
}

/// Runs an SDK test program to completion (60 s at most) and checks it succeeded.
pub async fn run_client(what: &str, command: &mut tokio::process::Command) {
    let mut child = command.kill_on_drop(true).spawn().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap();
    assert!(status.success(), "{what} failed: {status}");
}

/// Checks a profile an SDK sent: the application name and tags are labels, and the pprof
/// decodes and has samples with non-zero values.
pub fn assert_sdk_profile(p: &Profile, service: &str, tags: &[(&str, &str)]) {
    assert_eq!(p.service_name(), Some(service), "labels: {}", p.labels);
    for (k, v) in tags {
        assert_eq!(p.labels.get(k), Some(*v), "tag {k} missing in {}", p.labels);
    }
    p.labels.validate().expect("labels are valid");
    let pprof = pyro_core::pprof::decode(&p.raw, pyro_core::pprof::DEFAULT_MAX_DECODED_SIZE)
        .expect("pprof decodes");
    assert!(!pprof.sample.is_empty(), "profile has no samples");
    assert!(
        pprof.sample.iter().any(|s| s.value.iter().any(|v| *v > 0)),
        "all sample values are zero"
    );
}
