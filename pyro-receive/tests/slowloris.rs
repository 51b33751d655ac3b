//! Slow and idle clients cannot exhaust the server: hundreds of connections trickling a byte
//! every second or two — half of them in the headers, half in a body — while a real client's
//! pushes keep succeeding, and every slow connection is closed by the read timeout.

mod common;

use std::time::Duration;

use common::{Collect, post, start_with};
use prost::Message as _;
use pyro_core::pprof::{ProfileBuilder, encode_gzip};
use pyro_core::{Labels, Profile};
use pyro_receive::push::PushRequest;
use pyro_receive::{HttpConfig, ReceiveConfig, ReceiveMetrics};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PUSH: &str = "/push.v1.PusherService/Push";
/// Slow connections of each kind (2 × 150 sockets on each side stay under a 1024-fd limit).
const SLOW: usize = 150;
const READ_TIMEOUT: Duration = Duration::from_secs(4);

fn push() -> Vec<u8> {
    let mut b = ProfileBuilder::cpu(100);
    b.add_folded(&["main", "work"], &[10_000_000]);
    let p = Profile::new(
        Labels::from_iter([("__name__", "process_cpu"), ("service_name", "real")]),
        encode_gzip(&b.build(), 1),
    );
    PushRequest::from_profile(&p).encode_to_vec()
}

/// Sends `head` at once, then one byte of `trickle` every `every`; returns when the server
/// closes the connection (or after 20 s), with what the server sent.
async fn slow_client(
    addr: std::net::SocketAddr,
    head: Vec<u8>,
    trickle: u8,
    every: Duration,
) -> (bool, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (false, Vec::new());
    };
    let _ = s.write_all(&head).await;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if wr.write_all(&[trickle]).await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 512];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    (closed, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_starve_a_real_client() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ReceiveMetrics::register(&mut registry);
    // Defaults but a short read timeout, so the test sees the slow connections cut.
    let s = start_with(
        ReceiveConfig {
            http: HttpConfig {
                server_read_timeout: READ_TIMEOUT,
                ..HttpConfig::default()
            },
            ..ReceiveConfig::default()
        },
        Collect::default(),
        metrics,
    );
    let addr = s.handle.local_addr();
    let mut slow = Vec::new();
    for i in 0..SLOW {
        // Headers that never end: one more header byte every 2 s.
        let head = format!("POST {PUSH} HTTP/1.1\r\nhost: x\r\nx-slow-{i}: ").into_bytes();
        slow.push(tokio::spawn(slow_client(
            addr,
            head,
            b'a',
            Duration::from_secs(2),
        )));
        // A body that never ends: 1 MB announced, one byte a second.
        let head = format!(
            "POST {PUSH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/proto\r\ncontent-length: 1000000\r\n\r\n"
        )
        .into_bytes();
        slow.push(tokio::spawn(slow_client(
            addr,
            head,
            0,
            Duration::from_secs(1),
        )));
    }
    // Let them all connect (past the 128-entry accept backlog) and start trickling.
    let open = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find(|l| l.starts_with("pyroscope_receive_http_tcp_connections "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let start = tokio::time::Instant::now();
    while open() < (2 * SLOW) as f64 && start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open() >= (2 * SLOW) as f64,
        "the slow connections are open: {}",
        open()
    );

    // A real client keeps pushing through the slow ones for longer than the read timeout
    // (64 body-trickling clients would hold every request slot if bodies were read under one).
    let url = format!("{}{PUSH}", s.base);
    let start = tokio::time::Instant::now();
    let mut pushes = 0;
    while start.elapsed() < READ_TIMEOUT + Duration::from_secs(2) {
        let r = post(&url, &[("content-type", "application/proto")], push()).await;
        assert_eq!(r.status, 200, "push {pushes}: {}", r.text());
        pushes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(s.collect.profiles().len(), pushes);

    // Every slow connection was closed by the server's read timeout; the body tricklers were
    // told 408 first.
    let mut told_408 = 0;
    for (i, t) in slow.into_iter().enumerate() {
        let (closed, got) = t.await.unwrap();
        assert!(closed, "slow connection {i} was never closed");
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408") {
            told_408 += 1;
        }
    }
    assert_eq!(told_408, SLOW, "each body trickler got 408");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("pyroscope_receive_http_tcp_connections 0")
            || text.contains("pyroscope_receive_http_tcp_connections 1"),
        "connections are released:\n{text}"
    );
    eprintln!(
        "{} slow connections, {pushes} pushes succeeded alongside",
        2 * SLOW
    );
}

/// The body budget (`max_concurrent_requests × max_request_body_size`) is held from the
/// first byte read to the answer: a body that cannot get any within the read timeout is
/// refused as retryable (429), and the budget comes back when the holder is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_budget_bounds_bodies_in_flight() {
    let body = push();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let s = start_with(
        ReceiveConfig {
            http: HttpConfig {
                server_read_timeout: Duration::from_millis(500),
                ..HttpConfig::default()
            },
            max_concurrent_requests: 1,
            max_request_body_size: body.len(),
            ..ReceiveConfig::default()
        },
        Collect {
            gate: Some(gate.clone()),
            ..Collect::default()
        },
        ReceiveMetrics::default(),
    );
    let url = format!("{}{PUSH}", s.base);
    let (u, b) = (url.clone(), body.clone());
    // Holds the whole budget while its receiver waits on the gate.
    let holder =
        tokio::spawn(async move { post(&u, &[("content-type", "application/proto")], b).await });
    s.collect.entered.notified().await;
    let r = post(&url, &[("content-type", "application/proto")], body.clone()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("body budget"), "{}", r.text());
    gate.add_permits(2);
    assert_eq!(holder.await.unwrap().status, 200);
    let r = post(&url, &[("content-type", "application/proto")], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A keep-alive connection left idle after its request, and one that never sends a byte, are
/// closed after `server_read_timeout` (the idle timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let s = start_with(
        ReceiveConfig {
            http: HttpConfig {
                server_read_timeout: Duration::from_millis(700),
                ..HttpConfig::default()
            },
            ..ReceiveConfig::default()
        },
        Collect::default(),
        ReceiveMetrics::default(),
    );
    let addr = s.handle.local_addr();
    let body = push();
    let mut used = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {PUSH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/proto\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    used.write_all(&head).await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    for (what, conn) in [("after a request", &mut used), ("silent", &mut silent)] {
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got)).await;
        assert!(closed.is_ok(), "{what}: the idle connection was not closed");
        if what == "after a request" {
            assert!(
                String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    assert_eq!(s.collect.profiles().len(), 1);
}
