//! Fault handling over loopback: servers down, slow, rate limiting, refusing; several endpoints;
//! bounded memory; shutdown.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prometheus_client::registry::Registry;
use pyro_core::{AppendError, AppendErrorKind, Receiver};
use pyro_write::{
    AppendMode, ConnectCode, DeliveryError, DropReason, EndpointConfig, FullPolicy, PushError,
    QueueConfig, WriteMetrics, Writer, WriterConfig,
};

fn endpoint(url: &str) -> EndpointConfig {
    let mut e = EndpointConfig::new(url);
    e.retry = fast_retry();
    e.remote_timeout = Duration::from_secs(2);
    e
}

fn writer(
    endpoints: Vec<EndpointConfig>,
    mode: AppendMode,
    registry: &mut Registry,
) -> std::sync::Arc<Writer> {
    let config = WriterConfig {
        endpoints,
        append_mode: mode,
        ..WriterConfig::default()
    };
    Writer::builder(config)
        .with_metrics(WriteMetrics::register(registry))
        .spawn()
        .unwrap()
}

fn delivery_error(e: &AppendError) -> &DeliveryError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(d) = c.downcast_ref::<DeliveryError>() {
            return d;
        }
        cur = c.source();
    }
    panic!("no DeliveryError in {e:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_then_up_delivers_everything_once() {
    let addr = free_addr().await;
    let mut ep = endpoint(&format!("http://{addr}"));
    ep.retry.max_backoff_retries = 40; // 40 × ≤50 ms: a 2 s budget
    let mut registry = Registry::default();
    let w = writer(vec![ep], AppendMode::Enqueue, &mut registry);

    for i in 0..20 {
        w.append(profile("svc", &format!("p{i}"))).await.unwrap();
    }
    // Everything is held while the server is down, and retried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.stats()[0].held_profiles, 20);
    let server = TestServer::start_at(addr, |_, _| Reply::ok()).await;
    assert!(
        w.shutdown(std::time::Instant::now() + Duration::from_secs(10))
            .await
            .is_ok(),
        "flushed in time"
    );

    let ids: Vec<String> = server.captured().iter().map(|c| c.single().2).collect();
    let unique: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), 20, "no duplicates: {ids:?}");
    assert_eq!(unique.len(), 20);
    let ep_name = format!("http://{addr}");
    let retries = metric(
        &registry,
        &format!(r#"pyroscope_write_retries_total{{endpoint="{ep_name}"}}"#),
    )
    .unwrap();
    assert!(
        retries >= 20.0,
        "each profile was retried at least once: {retries}"
    );
    assert_eq!(w.stats()[0].held_profiles, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_runs_out_when_server_stays_down() {
    let addr = free_addr().await;
    let mut ep = endpoint(&format!("http://{addr}"));
    ep.retry.max_backoff_retries = 3;
    let mut registry = Registry::default();
    let w = writer(vec![ep], AppendMode::WaitForDelivery, &mut registry);
    let err = w.append(profile("svc", "x")).await.unwrap_err();
    assert_eq!(err.kind(), AppendErrorKind::Unavailable);
    let d = delivery_error(&err);
    assert_eq!(d.reason, DropReason::RetriesExhausted);
    assert_eq!(d.attempts, 4, "1 attempt + 3 retries");
    assert!(matches!(d.push_error(), Some(PushError::Transport { .. })));
    assert_eq!(
        metric(
            &registry,
            &format!(
                r#"pyroscope_write_dropped_profiles_total{{endpoint="http://{addr}",reason="retries_exhausted"}}"#
            )
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_not_retried_and_surfaces_the_server_error() {
    let server = TestServer::start(|_, _| {
        Reply::connect_error(
            400,
            "invalid_argument",
            "invalid labels '{foo=\"bar\"}' with error: invalid metric name",
        )
    })
    .await;
    let mut registry = Registry::default();
    let w = writer(
        vec![endpoint(&server.url())],
        AppendMode::WaitForDelivery,
        &mut registry,
    );
    let err = w.append(profile("svc", "x")).await.unwrap_err();
    assert_eq!(err.kind(), AppendErrorKind::InvalidInput);
    let d = delivery_error(&err);
    assert_eq!(d.reason, DropReason::Rejected);
    assert_eq!(d.attempts, 1);
    match d.push_error() {
        Some(PushError::Status {
            status,
            code,
            message,
            ..
        }) => {
            assert_eq!(*status, 400);
            assert_eq!(*code, ConnectCode::InvalidArgument);
            assert!(message.contains("invalid metric name"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("invalid metric name"), "{err}");
    // Give a (wrong) retry every chance to happen before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.count(), 1);
    assert_eq!(
        metric(
            &registry,
            &format!(
                r#"pyroscope_write_dropped_profiles_total{{endpoint="{}",reason="rejected"}}"#,
                server.url()
            )
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_proxy_errors_are_classified_by_status() {
    // A proxy's 400 without a Connect body is not retried (connect-go would call it `internal`
    // and Alloy would retry); a 502 is.
    let server = TestServer::start(|i, _| match i {
        0 => Reply {
            status: 502,
            headers: vec![],
            body: "<html>bad gateway</html>".into(),
            delay: Duration::ZERO,
        },
        _ => Reply {
            status: 400,
            headers: vec![],
            body: "nope".into(),
            delay: Duration::ZERO,
        },
    })
    .await;
    let mut registry = Registry::default();
    let w = writer(
        vec![endpoint(&server.url())],
        AppendMode::WaitForDelivery,
        &mut registry,
    );
    let err = w.append(profile("svc", "x")).await.unwrap_err();
    let d = delivery_error(&err);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.reason, DropReason::Rejected);
    assert_eq!(d.code(), Some(ConnectCode::InvalidArgument));
    assert_eq!(server.count(), 2);
}

async fn rate_limited(retry_on_http_429: bool) -> (TestServer, Result<(), AppendError>) {
    let server = TestServer::start(|i, _| {
        if i == 0 {
            Reply::connect_error(429, "resource_exhausted", "push rate limit exceeded")
                .with_header("retry-after", "1")
        } else {
            Reply::ok()
        }
    })
    .await;
    let mut ep = endpoint(&server.url());
    ep.retry.retry_on_http_429 = retry_on_http_429;
    // Retry-After is honoured up to the maximum backoff period.
    ep.retry.max_backoff_period = Duration::from_secs(2);
    let mut registry = Registry::default();
    let w = writer(vec![ep], AppendMode::WaitForDelivery, &mut registry);
    let result = w.append(profile("svc", "x")).await;
    let _ = w
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
    (server, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_not_retried_by_default() {
    let (server, result) = rate_limited(false).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), AppendErrorKind::ResourceExhausted);
    let d = delivery_error(&err);
    assert_eq!(d.reason, DropReason::Rejected);
    assert_eq!(d.code(), Some(ConnectCode::ResourceExhausted));
    assert_eq!(
        d.push_error().and_then(PushError::retry_after),
        Some(Duration::from_secs(1))
    );
    assert_eq!(server.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_retried_after_retry_after_when_enabled() {
    let (server, result) = rate_limited(true).await;
    result.unwrap();
    let reqs = server.captured();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    // The backoff alone would be < 20 ms; the server asked for 1 s.
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(
        reqs[0].single().1,
        reqs[1].single().1,
        "same profile resent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_times_out_then_the_retry_succeeds() {
    let server = TestServer::start(|i, _| {
        if i == 0 {
            Reply::ok().after(Duration::from_secs(3))
        } else {
            Reply::ok()
        }
    })
    .await;
    let mut ep = endpoint(&server.url());
    ep.remote_timeout = Duration::from_millis(200);
    let mut registry = Registry::default();
    let w = writer(vec![ep], AppendMode::WaitForDelivery, &mut registry);
    w.append(profile("svc", "x")).await.unwrap();
    assert_eq!(server.count(), 2);
    assert_eq!(
        metric(
            &registry,
            &format!(
                r#"pyroscope_write_retries_total{{endpoint="{}"}}"#,
                server.url()
            )
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_error_is_typed() {
    let server = TestServer::start(|_, _| Reply::ok().after(Duration::from_secs(3))).await;
    let mut ep = endpoint(&server.url());
    ep.remote_timeout = Duration::from_millis(100);
    ep.retry.max_backoff_retries = 1;
    let mut registry = Registry::default();
    let w = writer(vec![ep], AppendMode::WaitForDelivery, &mut registry);
    let err = w.append(profile("svc", "x")).await.unwrap_err();
    let d = delivery_error(&err);
    assert!(
        matches!(d.push_error(), Some(PushError::Timeout { .. })),
        "{d}"
    );
    assert_eq!(d.code(), Some(ConnectCode::DeadlineExceeded));
    assert_eq!(d.attempts, 2);
}

/// A server that accepts connections and never answers.
async fn black_hole() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_never_delays_the_healthy_one() {
    let healthy = TestServer::ok().await;
    let (hole, _hole_task) = black_hole().await;
    let mut dead = endpoint(&format!("http://{hole}"));
    dead.name = "dead".into();
    dead.remote_timeout = Duration::from_secs(30);
    dead.retry.max_backoff_retries = 0; // retry forever
    dead.queue = QueueConfig {
        max_profiles: 10,
        concurrency: 2,
        when_full: FullPolicy::FailFast,
        ..QueueConfig::default()
    };
    let mut ok = endpoint(&healthy.url());
    ok.name = "ok".into();
    let mut registry = Registry::default();
    let w = writer(vec![dead, ok], AppendMode::Enqueue, &mut registry);

    let started = Instant::now();
    let mut refused = 0;
    for i in 0..50 {
        if let Err(e) = w.append(profile("svc", &format!("p{i}"))).await {
            assert_eq!(e.kind(), AppendErrorKind::ResourceExhausted, "{e}");
            assert_eq!(delivery_error(&e).endpoint, "dead");
            refused += 1;
        }
    }
    // Every append returned without waiting for the dead endpoint's 30 s timeout…
    assert!(started.elapsed() < Duration::from_secs(10));
    // …the healthy endpoint got everything…
    healthy.wait_for(50, Duration::from_secs(10)).await;
    let ids: BTreeSet<_> = healthy.captured().iter().map(|c| c.single().2).collect();
    assert_eq!(ids.len(), 50);
    // …and the dead one's overflow was counted, not hidden.
    assert_eq!(refused, 40);
    assert_eq!(
        metric(
            &registry,
            r#"pyroscope_write_dropped_profiles_total{endpoint="dead",reason="queue_full"}"#
        ),
        Some(40.0)
    );
    let dead_stats = &w.stats()[0];
    assert_eq!(dead_stats.held_profiles, 10);

    // Shutdown with a dead endpoint: the flush times out, the rest is dropped and counted.
    assert!(
        w.shutdown(std::time::Instant::now() + Duration::from_millis(300))
            .await
            .is_err()
    );
    assert_eq!(
        metric(
            &registry,
            r#"pyroscope_write_dropped_profiles_total{endpoint="dead",reason="shutdown"}"#
        ),
        Some(10.0)
    );
    assert_eq!(w.stats()[0].held_profiles, 0);
    assert!(matches!(
        w.append(profile("svc", "late")).await,
        Err(AppendError::Shutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_delivery_still_does_not_delay_the_healthy_endpoint() {
    let healthy = TestServer::ok().await;
    let (hole, _hole_task) = black_hole().await;
    let mut dead = endpoint(&format!("http://{hole}"));
    dead.remote_timeout = Duration::from_secs(30);
    let w = Arc::new(writer(
        vec![dead, endpoint(&healthy.url())],
        AppendMode::WaitForDelivery,
        &mut Registry::default(),
    ));
    let w2 = w.clone();
    let append = tokio::spawn(async move { w2.append(profile("svc", "p")).await });
    healthy.wait_for(1, Duration::from_secs(10)).await;
    assert!(!append.is_finished(), "append waits for the dead endpoint");
    assert!(
        w.shutdown(std::time::Instant::now() + Duration::from_millis(100))
            .await
            .is_err()
    );
    let err = append.await.unwrap().unwrap_err();
    assert!(matches!(err, AppendError::Shutdown), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_waits_up_to_the_deadline() {
    let addr = free_addr().await;
    let mut ep = endpoint(&format!("http://{addr}"));
    ep.retry.max_backoff_retries = 0;
    ep.queue = QueueConfig {
        max_profiles: 2,
        when_full: FullPolicy::Wait(Duration::from_millis(200)),
        ..QueueConfig::default()
    };
    let mut registry = Registry::default();
    let w = writer(vec![ep], AppendMode::Enqueue, &mut registry);
    w.append(profile("svc", "1")).await.unwrap();
    w.append(profile("svc", "2")).await.unwrap();
    let t = Instant::now();
    let err = w.append(profile("svc", "3")).await.unwrap_err();
    assert!(
        t.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(delivery_error(&err).reason, DropReason::QueueFull);

    // Room appears once the server comes up: a waiting append gets in.
    let server = TestServer::start_at(addr, |_, _| Reply::ok()).await;
    server.wait_for(2, Duration::from_secs(10)).await;
    w.append(profile("svc", "4")).await.unwrap();
    assert!(
        w.shutdown(std::time::Instant::now() + Duration::from_secs(5))
            .await
            .is_ok()
    );
    assert_eq!(server.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_larger_than_the_queue_is_refused() {
    let server = TestServer::ok().await;
    let mut ep = endpoint(&server.url());
    ep.queue.max_bytes = 100;
    let w = writer(vec![ep], AppendMode::Enqueue, &mut Registry::default());
    let err = w.append(profile("svc", "x")).await.unwrap_err();
    assert_eq!(delivery_error(&err).reason, DropReason::TooLarge);
    assert_eq!(err.kind(), AppendErrorKind::InvalidInput);
}

/// RSS of this process in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A steady stream into an endpoint that is down: the bytes held never exceed the limit and the
/// overflow is counted. `PYRO_WRITE_SOAK_SECS` sets the duration (default 2 s; BENCHMARKS.md
/// has the 60 s figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_an_endpoint_is_down() {
    let secs: u64 = std::env::var("PYRO_WRITE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let addr = free_addr().await;
    let limit = 4 << 20;
    let mut ep = endpoint(&format!("http://{addr}"));
    ep.retry.max_backoff_retries = 0;
    ep.queue = QueueConfig {
        max_bytes: limit,
        max_profiles: 100_000,
        concurrency: 8,
        when_full: FullPolicy::FailFast,
    };
    let mut registry = Registry::default();
    // The payload is random bytes, not a pprof: the ingest limits (which decode it) are off.
    let w = Writer::builder(WriterConfig {
        endpoints: vec![ep],
        limits: pyro_core::limits::IngestLimits::disabled(),
        ..WriterConfig::default()
    })
    .with_metrics(WriteMetrics::register(&mut registry))
    .spawn()
    .unwrap();
    // ~10 KB profiles (incompressible payload), 1000 per second.
    let payload: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let payload = bytes::Bytes::from(payload);
    let rss_start = rss();
    let mut rss_peak = rss_start;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut refused = 0u64;
    let mut peak_gauge = 0.0f64;
    let gauge = format!(r#"pyroscope_write_queue_bytes{{endpoint="http://{addr}"}}"#);
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..10 {
            let mut p = profile("svc", "x");
            p.raw = payload.clone();
            sent += 1;
            if w.append(p).await.is_err() {
                refused += 1;
            }
        }
        let held = w.stats()[0].held_bytes;
        assert!(held <= limit, "held {held} > {limit}");
        if sent.is_multiple_of(100) {
            peak_gauge = peak_gauge.max(metric(&registry, &gauge).unwrap_or(0.0));
            rss_peak = rss_peak.max(rss());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = w.stats()[0].clone();
    let dropped = metric(
        &registry,
        &format!(
            r#"pyroscope_write_dropped_profiles_total{{endpoint="http://{addr}",reason="queue_full"}}"#
        ),
    )
    .unwrap_or(0.0);
    println!(
        "soak {secs}s: appended {sent}, refused {refused}, peak held {} B (limit {limit}), \
         peak gauge {peak_gauge}, RSS start {} KiB, peak {} KiB",
        stats.peak_bytes,
        rss_start / 1024,
        rss_peak / 1024
    );
    assert!(stats.peak_bytes <= limit);
    assert!(peak_gauge <= limit as f64);
    assert!(stats.peak_bytes > limit / 2, "the queue did fill up");
    assert!(
        refused > 0 && dropped == refused as f64,
        "{refused} vs {dropped}"
    );
    assert!(
        w.shutdown(std::time::Instant::now() + Duration::from_millis(100))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pprof_is_refused_before_sending_when_checked() {
    let server = TestServer::ok().await;
    let mut registry = Registry::default();
    let config = WriterConfig {
        endpoints: vec![endpoint(&server.url())],
        append_mode: AppendMode::WaitForDelivery,
        check_profiles: true,
        ..WriterConfig::default()
    };
    let w = Writer::builder(config)
        .with_metrics(WriteMetrics::register(&mut registry))
        .spawn()
        .unwrap();
    let mut broken = profile("svc", "broken");
    broken.raw = bytes::Bytes::from_static(b"\x1f\x8b\x08\x00garbage");
    let err = w.append(broken).await.unwrap_err();
    assert!(matches!(err, AppendError::InvalidProfile(_)), "{err}");
    w.append(profile("svc", "good")).await.unwrap();
    let ids: Vec<_> = server.captured().iter().map(|c| c.single().2).collect();
    assert_eq!(ids, ["good"]);
    assert_eq!(
        metric(
            &registry,
            r#"pyroscope_write_dropped_profiles_total{endpoint="-",reason="invalid_profile"}"#
        ),
        Some(1.0)
    );
}

/// A sink that fails (retryably) a given number of times, then accepts.
#[derive(Debug)]
struct Flaky {
    failures_left: std::sync::atomic::AtomicU32,
    accepted: std::sync::atomic::AtomicU32,
}

#[pyro_core::async_trait]
impl pyro_core::Sink for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn send(&self, _: &pyro_core::Profile) -> Result<(), pyro_core::SinkError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .failures_left
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(pyro_core::SinkError::retryable("flaky", "not yet"));
        }
        self.accepted.fetch_add(1, SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_sink_gets_the_same_retry_policy() {
    let flaky = Arc::new(Flaky {
        failures_left: 3.into(),
        accepted: 0.into(),
    });
    let mut registry = Registry::default();
    let spec = pyro_write::SinkSpec {
        sink: flaky.clone(),
        retry: fast_retry(),
        queue: QueueConfig::default(),
    };
    let config = WriterConfig {
        append_mode: AppendMode::WaitForDelivery,
        ..WriterConfig::default()
    };
    let w = Writer::builder(config)
        .sinks(vec![spec])
        .with_metrics(WriteMetrics::register(&mut registry))
        .spawn()
        .unwrap();
    w.append(profile("svc", "x")).await.unwrap();
    assert_eq!(flaky.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        metric(
            &registry,
            r#"pyroscope_write_retries_total{endpoint="flaky"}"#
        ),
        Some(3.0)
    );
}
