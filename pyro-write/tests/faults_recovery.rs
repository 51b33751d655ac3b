//! Fault scenarios of issue 15 against loopback servers: an endpoint flapping every second and
//! a half, a server that accepts and never answers, 429 without `Retry-After`, TLS handshake
//! failure, connection refused then recovery. In each: memory held stays within the queue
//! limit, every profile is delivered or its drop counted by cause, and delivery resumes within
//! one backoff step of the server coming back.
//!
//! Peak RSS growth of each scenario is printed (`--nocapture`); BENCHMARKS.md has the figures of
//! `cargo test -p pyro-write --release --test faults_recovery -- --nocapture --test-threads=1`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prometheus_client::registry::Registry;
use pyro_core::limits::IngestLimits;
use pyro_core::{AppendErrorKind, Profile, Receiver};
use pyro_write::{
    AppendMode, DropReason, EndpointConfig, FullPolicy, PushError, QueueConfig, RetryPolicy,
    WriteMetrics, Writer, WriterConfig,
};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(400);

fn retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        min_backoff_period: MIN_BACKOFF,
        max_backoff_period: MAX_BACKOFF,
        max_backoff_retries: max_retries,
        retry_on_http_429: true,
    }
}

fn endpoint(url: &str, retries: u32, queue: QueueConfig) -> EndpointConfig {
    let mut e = EndpointConfig::new(url);
    e.retry = retry(retries);
    e.remote_timeout = Duration::from_millis(300);
    e.queue = queue;
    e
}

/// A writer without the ingest limits: the payloads here are sized random bytes, not pprof.
fn writer(ep: EndpointConfig, mode: AppendMode, registry: &mut Registry) -> Arc<Writer> {
    Writer::builder(WriterConfig {
        endpoints: vec![ep],
        append_mode: mode,
        limits: IngestLimits::disabled(),
        ..WriterConfig::default()
    })
    .with_metrics(WriteMetrics::register(registry))
    .spawn()
    .unwrap()
}

/// A 10 KB incompressible payload under a valid label set, with id `id`.
fn big(id: &str) -> Profile {
    let payload: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut p = profile("svc", id);
    p.raw = bytes::Bytes::from(payload);
    p
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Drops of endpoint `ep` by reason, from the registry.
fn drops(registry: &Registry, ep: &str) -> std::collections::BTreeMap<String, f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let prefix = format!(r#"pyroscope_write_dropped_profiles_total{{endpoint="{ep}",reason=""#);
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Waits until `server` has seen a request after `since`; returns how long after `since`.
async fn first_request_after(server: &TestServer, since: Instant, limit: Duration) -> Duration {
    loop {
        if let Some(c) = server.captured().iter().find(|c| c.at >= since) {
            return c.at - since;
        }
        assert!(
            since.elapsed() < limit,
            "no request within {limit:?} of recovery"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_endpoint_delivers_everything_and_resumes_within_one_backoff_step() {
    let addr = free_addr().await;
    let url = format!("http://{addr}");
    let queue = QueueConfig {
        max_bytes: 4 << 20,
        max_profiles: 10_000,
        concurrency: 4,
        when_full: FullPolicy::FailFast,
    };
    let mut registry = Registry::default();
    let w = writer(
        endpoint(&url, 1_000, queue),
        AppendMode::Enqueue,
        &mut registry,
    );
    let rss_start = rss();
    let producer = {
        let w = w.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let start = Instant::now();
            let mut i = 0;
            while start.elapsed() < Duration::from_secs(9) {
                let id = format!("p{i}");
                w.append(big(&id)).await.unwrap();
                ids.push(id);
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ids
        })
    };
    // Up 1.5 s, down 1.5 s, three times, then up for good.
    let mut servers = Vec::new();
    let mut resumed = Vec::new();
    let mut peak_held = 0;
    let mut rss_peak = rss_start;
    for cycle in 0..4 {
        let up = Instant::now();
        let server = TestServer::start_at(addr, |_, _| Reply::ok()).await;
        if cycle > 0 {
            // Profiles were queued while it was down: the first arrives within one backoff step.
            resumed.push(first_request_after(&server, up, Duration::from_secs(5)).await);
        }
        if cycle == 3 {
            servers.push(server);
            break;
        }
        while up.elapsed() < Duration::from_millis(1500) {
            peak_held = peak_held.max(w.stats()[0].held_bytes);
            rss_peak = rss_peak.max(rss());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill();
        servers.push(server);
        let down = Instant::now();
        while down.elapsed() < Duration::from_millis(1500) {
            peak_held = peak_held.max(w.stats()[0].held_bytes);
            rss_peak = rss_peak.max(rss());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ids = producer.await.unwrap();
    w.shutdown(Instant::now() + Duration::from_secs(10))
        .await
        .expect("everything delivered after the last recovery");
    let delivered: BTreeSet<String> = servers
        .iter()
        .flat_map(|s| s.captured())
        .map(|c| c.single().2)
        .collect();
    let missing: Vec<_> = ids.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert!(drops(&registry, &url).is_empty(), "nothing dropped");
    for gap in &resumed {
        assert!(
            *gap <= MAX_BACKOFF + Duration::from_millis(250),
            "delivery resumed {gap:?} after recovery (max backoff {MAX_BACKOFF:?}): {resumed:?}"
        );
    }
    assert!(peak_held <= 4 << 20);
    println!(
        "flapping: {} profiles of 10 KB, resumed after {resumed:?}, peak held {} KiB, RSS growth {} KiB",
        ids.len(),
        peak_held / 1024,
        rss_peak.saturating_sub(rss_start) / 1024
    );
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

/// Appends `n` profiles as fast as the queue allows (fail fast), tracking the bytes held and
/// RSS; returns (refused, peak held, RSS growth).
async fn flood(w: &Writer, n: usize, limit: usize) -> (usize, usize, u64) {
    let rss_start = rss();
    let (mut refused, mut peak, mut rss_peak) = (0, 0, rss_start);
    for i in 0..n {
        if w.append(big(&format!("f{i}"))).await.is_err() {
            refused += 1;
        }
        let held = w.stats()[0].held_bytes;
        assert!(held <= limit, "held {held} > {limit}");
        peak = peak.max(held);
        if i % 50 == 0 {
            rss_peak = rss_peak.max(rss());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (refused, peak, rss_peak.saturating_sub(rss_start))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_memory_is_bounded_and_every_drop_counted() {
    let (addr, _task) = black_hole().await;
    let url = format!("http://{addr}");
    let limit = 1 << 20;
    let queue = QueueConfig {
        max_bytes: limit,
        max_profiles: 1_000,
        concurrency: 8,
        when_full: FullPolicy::FailFast,
    };
    let mut registry = Registry::default();
    let w = writer(endpoint(&url, 1, queue), AppendMode::Enqueue, &mut registry);
    let n = 2_000;
    let (refused, peak, growth) = flood(&w, n, limit).await;
    // Give the held ones their two attempts (2 × 300 ms timeout + backoff), then shut down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = w
        .shutdown(Instant::now() + Duration::from_millis(200))
        .await;
    let d = drops(&registry, &url);
    let total: f64 = d.values().sum();
    assert_eq!(total, n as f64, "every profile dropped and counted: {d:?}");
    assert_eq!(d.get("queue_full").copied(), Some(refused as f64), "{d:?}");
    assert!(
        d.get("retries_exhausted").copied().unwrap_or(0.0) > 0.0,
        "timeouts retried, then dropped: {d:?}"
    );
    println!(
        "black hole: {n} profiles of 10 KB into a {} KiB queue: peak held {} KiB, RSS growth {} KiB, drops {d:?}",
        limit / 1024,
        peak / 1024,
        growth / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_then_recovery_within_one_backoff_step() {
    let addr = free_addr().await;
    let url = format!("http://{addr}");
    let limit = 1 << 20;
    let queue = QueueConfig {
        max_bytes: limit,
        max_profiles: 1_000,
        concurrency: 8,
        when_full: FullPolicy::FailFast,
    };
    let mut registry = Registry::default();
    let w = writer(
        endpoint(&url, 1_000, queue),
        AppendMode::Enqueue,
        &mut registry,
    );
    let n = 500;
    let (refused, peak, growth) = flood(&w, n, limit).await;
    assert!(refused > 0, "the queue filled up");
    let held = w.stats()[0].held_profiles;
    // Let the backoff reach its cap, then come back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up = Instant::now();
    let server = TestServer::start_at(addr, |_, _| Reply::ok()).await;
    let gap = first_request_after(&server, up, Duration::from_secs(5)).await;
    assert!(
        gap <= MAX_BACKOFF + Duration::from_millis(250),
        "resumed {gap:?} after recovery"
    );
    w.shutdown(Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    let delivered: BTreeSet<String> = server.captured().iter().map(|c| c.single().2).collect();
    assert_eq!(delivered.len(), held, "everything held was delivered");
    let d = drops(&registry, &url);
    assert_eq!(d.get("queue_full").copied(), Some(refused as f64), "{d:?}");
    assert_eq!(
        d.values().sum::<f64>() + delivered.len() as f64,
        n as f64,
        "delivered + dropped = appended: {d:?}"
    );
    println!(
        "connection refused: {n} profiles of 10 KB into a {} KiB queue: peak held {} KiB, RSS growth {} KiB, resumed after {gap:?}",
        limit / 1024,
        peak / 1024,
        growth / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_without_retry_after_backs_off_and_delivers() {
    let server = TestServer::start(|i, _| {
        if i < 3 {
            Reply::connect_error(429, "resource_exhausted", "push rate limit exceeded")
        } else {
            Reply::ok()
        }
    })
    .await;
    let mut registry = Registry::default();
    let w = writer(
        endpoint(&server.url(), 10, QueueConfig::default()),
        AppendMode::WaitForDelivery,
        &mut registry,
    );
    w.append(profile("svc", "x")).await.unwrap();
    let at: Vec<Instant> = server.captured().iter().map(|c| c.at).collect();
    assert_eq!(at.len(), 4, "3 refusals, then delivered");
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        // The backoff: at least the minimum, never more than the cap (no Retry-After).
        assert!(
            gap >= MIN_BACKOFF && gap <= MAX_BACKOFF + Duration::from_millis(200),
            "{gap:?}"
        );
    }
    assert_eq!(
        metric(
            &registry,
            &format!(
                r#"pyroscope_write_retries_total{{endpoint="{}"}}"#,
                server.url()
            )
        ),
        Some(3.0)
    );
    assert!(drops(&registry, &server.url()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_retry_after_is_capped_at_the_max_backoff() {
    let server = TestServer::start(|i, _| {
        if i == 0 {
            Reply::connect_error(429, "resource_exhausted", "slow down")
                .with_header("retry-after", "3600")
        } else {
            Reply::ok()
        }
    })
    .await;
    let mut registry = Registry::default();
    let w = writer(
        endpoint(&server.url(), 10, QueueConfig::default()),
        AppendMode::WaitForDelivery,
        &mut registry,
    );
    let start = Instant::now();
    w.append(profile("svc", "x")).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "an hour-long Retry-After waits at most max_backoff_period"
    );
    assert_eq!(server.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_failure_is_retried_then_counted() {
    // An https endpoint whose server speaks plain HTTP: the handshake fails every time.
    let server = TestServer::ok().await;
    let url = format!("https://{}", server.addr);
    let mut registry = Registry::default();
    let w = writer(
        endpoint(&url, 2, QueueConfig::default()),
        AppendMode::WaitForDelivery,
        &mut registry,
    );
    let err = w.append(profile("svc", "x")).await.unwrap_err();
    assert_eq!(err.kind(), AppendErrorKind::Unavailable, "{err}");
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut delivery = None;
    while let Some(c) = cur {
        if let Some(d) = c.downcast_ref::<pyro_write::DeliveryError>() {
            delivery = Some(d);
        }
        cur = c.source();
    }
    let d = delivery.expect("a DeliveryError");
    assert_eq!(d.reason, DropReason::RetriesExhausted);
    assert_eq!(d.attempts, 3);
    assert!(
        matches!(d.push_error(), Some(PushError::Transport { .. })),
        "{d}"
    );
    assert_eq!(server.count(), 0, "no request got through");
    assert_eq!(
        drops(&registry, &url).get("retries_exhausted").copied(),
        Some(1.0)
    );
    println!("tls handshake failure: {d}");
}
