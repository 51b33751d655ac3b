//! Behaviour over real HTTP: both endpoints, every refusal a client can get, limits, metrics,
//! downstream failures and graceful shutdown.

#![allow(clippy::type_complexity, reason = "tables of test cases")]

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use common::{Collect, post, request, start, start_with, start_without_window};
use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message as _;
use pyro_core::pprof::{ProfileBuilder, decode, encode_gzip};
use pyro_core::{AppendError, LabelError};
use pyro_core::{Labels, Profile};
use pyro_receive::push::PushRequest;
use pyro_receive::{HttpConfig, ReceiveConfig, ReceiveMetrics};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PUSH: &str = "/push.v1.PusherService/Push";
const PROTO: (&str, &str) = ("content-type", "application/proto");

fn pprof() -> Vec<u8> {
    let mut b = ProfileBuilder::cpu(100);
    b.add_folded(&["main", "work"], &[30_000_000]);
    b.add_folded(&["main", "idle"], &[10_000_000]);
    encode_gzip(&b.build(), 1)
}

fn push_body(labels: &[(&str, &str)], raw: Vec<u8>) -> Vec<u8> {
    let profile = Profile::new(Labels::from_iter(labels.iter().copied()), raw)
        .with_id("5cf8a3b4-0b8e-4d3a-9c1e-0a1b2c3d4e5f");
    PushRequest::from_profile(&profile).encode_to_vec()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn good_push() -> Vec<u8> {
    push_body(
        &[
            ("__name__", "process_cpu"),
            ("service_name", "checkout"),
            ("env", "prod"),
        ],
        pprof(),
    )
}

#[tokio::test]
async fn push_proto_json_and_gzip_arrive_with_labels() {
    let s = start();
    let url = format!("{}{PUSH}", s.base);

    let r = post(
        &url,
        &[PROTO, ("connect-protocol-version", "1")],
        good_push(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.headers["content-type"], "application/proto");

    let r = post(
        &url,
        &[PROTO, ("content-encoding", "gzip")],
        gzip(&good_push()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let b64 = base64_encode(&pprof());
    let json = format!(
        r#"{{"series":[{{"labels":[{{"name":"__name__","value":"process_cpu"}},{{"name":"service_name","value":"checkout"}},{{"name":"env","value":"prod"}}],"samples":[{{"ID":"x","rawProfile":"{b64}"}}]}}]}}"#
    );
    let r = post(
        &url,
        &[("content-type", "application/json; charset=utf-8")],
        json,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "{}");
    assert_eq!(r.headers["content-type"], "application/json");

    // Any routing prefix works, as on Pyroscope.
    let r = post(&format!("{}/prefix{PUSH}", s.base), &[PROTO], good_push()).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let got = s.collect.profiles();
    assert_eq!(got.len(), 4);
    for p in &got {
        assert_eq!(p.service_name(), Some("checkout"));
        assert_eq!(p.labels.get("env"), Some("prod"));
        assert_eq!(p.profile_type(), Some("process_cpu"));
        assert_eq!(decode(&p.raw, 1 << 20).unwrap().sample.len(), 2);
    }
    assert_eq!(
        got[0].id.as_deref(),
        Some("5cf8a3b4-0b8e-4d3a-9c1e-0a1b2c3d4e5f")
    );
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Every malformed request gets a 4xx naming the problem, and the server keeps serving.
#[tokio::test]
async fn malformed_requests_are_refused_and_the_server_keeps_serving() {
    let s = start_with(
        ReceiveConfig {
            max_request_body_size: 64 << 10,
            ..ReceiveConfig::default()
        },
        Collect::default(),
        ReceiveMetrics::default(),
    );
    let url = format!("{}{PUSH}", s.base);
    let ingest = format!("{}/ingest?name=app.cpu", s.base);
    let big = vec![b'a'; 100 << 10];
    let bad_gzip = {
        let mut g = gzip(&good_push());
        g.truncate(g.len() / 2);
        g
    };
    let cases: Vec<(&str, Vec<(&str, &str)>, Vec<u8>, u16, &str, &str)> = vec![
        (
            "bad protobuf",
            vec![PROTO],
            b"\x0a\xff\xff\xff\x0f".to_vec(),
            400,
            "invalid_argument",
            "unmarshal message",
        ),
        (
            "bad json",
            vec![("content-type", "application/json")],
            b"{\"series\":[".to_vec(),
            400,
            "invalid_argument",
            "unmarshal message",
        ),
        (
            "bad gzip",
            vec![PROTO, ("content-encoding", "gzip")],
            bad_gzip,
            400,
            "invalid_argument",
            "gzip",
        ),
        (
            "bad pprof",
            vec![PROTO],
            push_body(&[("__name__", "process_cpu")], b"\x08\xff".to_vec()),
            400,
            "invalid_argument",
            "raw_profile",
        ),
        (
            "invalid label",
            vec![PROTO],
            push_body(&[("__name__", "process_cpu"), ("my-label", "x")], pprof()),
            400,
            "invalid_argument",
            "my-label",
        ),
        (
            "invalid metric",
            vec![PROTO],
            push_body(&[("__name__", "process:cpu")], pprof()),
            400,
            "invalid_argument",
            "__name__",
        ),
        (
            "no profiles",
            vec![PROTO],
            Vec::new(),
            400,
            "invalid_argument",
            "no profiles received",
        ),
        (
            "oversized",
            vec![PROTO],
            big.clone(),
            413,
            "invalid_argument",
            "max_request_body_size",
        ),
        (
            "protocol version",
            vec![PROTO, ("connect-protocol-version", "2")],
            good_push(),
            400,
            "invalid_argument",
            "Connect-Protocol-Version",
        ),
        (
            "media type",
            vec![("content-type", "text/plain")],
            good_push(),
            415,
            "invalid_argument",
            "Content-Type",
        ),
        (
            "encoding",
            vec![PROTO, ("content-encoding", "br")],
            good_push(),
            501,
            "unimplemented",
            "br",
        ),
    ];
    for (what, headers, body, status, code, needle) in cases {
        let r = post(&url, &headers, body).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let j = r.json();
        assert_eq!(j["code"], code, "{what}");
        let msg = j["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} lacks {needle:?}"
        );
        assert_eq!(r.headers["content-type"], "application/json");
        if status == 415 {
            assert!(r.headers.contains_key("accept-post"));
        }
    }

    let ingest_cases: Vec<(&str, String, Vec<(&str, &str)>, Vec<u8>, u16, &str)> = vec![
        (
            "unknown format",
            format!("{ingest}&format=xml"),
            vec![],
            b"a 1".to_vec(),
            400,
            "unknown format",
        ),
        (
            "jfr",
            format!("{ingest}&format=jfr"),
            vec![],
            b"x".to_vec(),
            415,
            "jfr",
        ),
        (
            "bad name",
            format!("{}/ingest?name=a%7Bb", s.base),
            vec![],
            b"a 1".to_vec(),
            400,
            "name:",
        ),
        (
            "bad count",
            ingest.clone(),
            vec![],
            b"a;b lots".to_vec(),
            400,
            "folded line 1",
        ),
        (
            "bad pprof",
            format!("{ingest}&format=pprof"),
            vec![],
            b"\x0a\xff\xff".to_vec(),
            400,
            "pprof body",
        ),
        (
            "bad gzip pprof",
            format!("{ingest}&format=pprof"),
            vec![],
            b"\x1f\x8b\x08\x00garbage".to_vec(),
            400,
            "gzip",
        ),
        (
            "truncated multipart",
            ingest.clone(),
            vec![("content-type", "multipart/form-data; boundary=B")],
            b"--B\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"p\"\r\n\r\nabc"
                .to_vec(),
            400,
            "multipart",
        ),
        (
            "oversized",
            ingest.clone(),
            vec![],
            big,
            413,
            "max_request_body_size",
        ),
        (
            "invalid label",
            format!(
                "{}/ingest?name=app.cpu%7Bx%3D{}%7D",
                s.base,
                "v".repeat(3000)
            ),
            vec![],
            b"a 1".to_vec(),
            400,
            "label_value_too_long",
        ),
    ];
    for (what, url, headers, body, status, needle) in ingest_cases {
        let r = post(&url, &headers, body).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(needle),
            "{what}: message {msg:?} lacks {needle:?}"
        );
    }

    let r = request("GET", &url, &[], Vec::new()).await;
    assert_eq!(
        (r.status, r.headers["allow"].to_str().unwrap()),
        (405, "POST")
    );
    let r = post(&format!("{}/nope", s.base), &[], Vec::new()).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("not_found"))
    );

    assert!(
        s.collect.profiles().is_empty(),
        "nothing malformed was forwarded"
    );
    let r = post(&url, &[PROTO], good_push()).await;
    assert_eq!(r.status, 200, "still serving: {}", r.text());
    assert_eq!(s.collect.profiles().len(), 1);
}

/// A body without Content-Length (chunked) over the limit is cut off while being read.
#[tokio::test]
async fn chunked_oversized_body_is_refused() {
    let s = start_with(
        ReceiveConfig {
            max_request_body_size: 1000,
            ..ReceiveConfig::default()
        },
        Collect::default(),
        ReceiveMetrics::default(),
    );
    let mut conn = tokio::net::TcpStream::connect(s.handle.local_addr())
        .await
        .unwrap();
    let mut req = format!(
        "POST {PUSH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/proto\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 500, "a".repeat(500)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    conn.write_all(&req).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn ingest_folded_lines_and_pprof() {
    let s = start_without_window();
    let r = post(
        &format!(
            "{}/ingest?name=shop.cpu%7Benv%3Dstaging%7D&from=now-10s&until=now&sampleRate=100&spyName=rbspy",
            s.base
        ),
        &[("content-type", "text/plain")],
        "main;checkout;price 7\nmain;idle 3\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = s.collect.profiles().pop().unwrap();
    assert_eq!(p.service_name(), Some("shop"));
    assert_eq!(p.labels.get("env"), Some("staging"));
    assert_eq!(p.labels.get("pyroscope_spy"), Some("rbspy"));
    let pp = decode(&p.raw, 1 << 20).unwrap();
    let total: i64 = pp.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, 10 * 10_000_000);

    // Content-Encoding gzip on a text body is accepted too.
    let r = post(
        &format!("{}/ingest?name=shop.wall&format=lines", s.base),
        &[("content-encoding", "gzip")],
        gzip(b"a;b\na;b\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.collect.profiles().pop().unwrap().profile_type(),
        Some("wall")
    );

    // A Go runtime heap profile, raw.
    let heap = include_bytes!("../testdata/go-heap.pb.gz");
    let r = post(
        &format!("{}/ingest?name=goapp&format=pprof", s.base),
        &[("content-type", "application/octet-stream")],
        heap.to_vec(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = s.collect.profiles().pop().unwrap();
    assert_eq!(p.profile_type(), Some("memory"));
    assert_eq!(p.service_name(), Some("goapp"));
    assert_eq!(&p.raw[..], &heap[..]);
}

/// Multipart as curl encodes it (an encoder nobody here wrote).
#[tokio::test]
async fn ingest_multipart_from_curl() {
    let Some(curl) = pyro_testkit::tool("curl") else {
        return;
    };
    let s = start_without_window();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cpu = include_bytes!("../testdata/go-cpu.pb.gz");
    std::fs::write(dir.join("cpu.pb.gz"), cpu).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"samples":{"units":"samples","display-name":"cpu_samples"},"cpu":{"units":"nanoseconds"}}"#,
    )
    .unwrap();
    let url = format!(
        "{}/ingest?name=curl.app%7Bteam%3Dinfra%7D&spyName=gospy",
        s.base
    );
    let out = tokio::process::Command::new(curl)
        .arg("-sS")
        .arg("-w")
        .arg("%{http_code}")
        .arg("-F")
        .arg(format!("profile=@{}", dir.join("cpu.pb.gz").display()))
        .arg("-F")
        .arg(format!(
            "sample_type_config=@{}",
            dir.join("config.json").display()
        ))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    let p = s.collect.profiles().pop().expect("profile forwarded");
    assert_eq!(p.service_name(), Some("curl.app"));
    assert_eq!(p.labels.get("team"), Some("infra"));
    assert_eq!(p.profile_type(), Some("process_cpu"));
    assert_eq!(&p.raw[..], &cpu[..]);
}

#[tokio::test]
async fn downstream_failures_keep_their_kind() {
    let s = start();
    let url = format!("{}{PUSH}", s.base);
    let cases: [(fn() -> AppendError, u16, &str); 4] = [
        (
            || AppendError::unavailable("connection refused"),
            503,
            "unavailable",
        ),
        (
            || AppendError::ResourceExhausted("queue full".into()),
            429,
            "resource_exhausted",
        ),
        (|| AppendError::internal("bug"), 500, "internal"),
        (
            || AppendError::InvalidLabels(LabelError::Empty),
            400,
            "invalid_argument",
        ),
    ];
    for (fail, status, code) in cases {
        *s.collect.fail.lock().unwrap() = Some(fail);
        let r = post(&url, &[PROTO], good_push()).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str().unwrap()),
            (status, code)
        );
        let r = post(&format!("{}/ingest?name=a.cpu", s.base), &[], "a 1").await;
        assert_eq!(r.status, status);
    }
}

#[tokio::test]
async fn metrics_count_requests_bytes_and_profiles() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ReceiveMetrics::register(&mut registry);
    let s = start_with(ReceiveConfig::default(), Collect::default(), metrics);
    let url = format!("{}{PUSH}", s.base);
    let body = good_push();
    assert_eq!(post(&url, &[PROTO], body.clone()).await.status, 200);
    assert_eq!(post(&url, &[PROTO], b"\xff".to_vec()).await.status, 400);
    assert_eq!(
        post(&format!("{}/ingest?name=a.cpu", s.base), &[], "a 1")
            .await
            .status,
        200
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        r#"pyroscope_receive_http_requests_total{endpoint="push",status_code="200"} 1"#.to_owned(),
        r#"pyroscope_receive_http_requests_total{endpoint="push",status_code="400"} 1"#.to_owned(),
        r#"pyroscope_receive_http_requests_total{endpoint="ingest",status_code="200"} 1"#
            .to_owned(),
        format!(
            r#"pyroscope_receive_http_received_bytes_total{{endpoint="push"}} {}"#,
            body.len() + 1
        ),
        r#"pyroscope_receive_http_profiles_forwarded_total{endpoint="push"} 1"#.to_owned(),
        r#"pyroscope_receive_http_profiles_forwarded_total{endpoint="ingest"} 1"#.to_owned(),
        "pyroscope_receive_http_tcp_connections_limit 16384".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let s = start_with(
        ReceiveConfig::default(),
        Collect {
            gate: Some(gate.clone()),
            ..Collect::default()
        },
        ReceiveMetrics::default(),
    );
    let url = format!("{}{PUSH}", s.base);
    let in_flight = tokio::spawn(async move { post(&url, &[PROTO], good_push()).await });
    s.collect.entered.notified().await;
    s.handle.stop();
    // The listener closes while the request is still being processed…
    let addr = s.handle.local_addr();
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after shutdown");
    assert!(!s.task.is_finished());
    // …and the request completes once the receiver lets it.
    gate.add_permits(1);
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    s.task.await.unwrap().unwrap();
    assert_eq!(s.collect.profiles().len(), 1);
}

#[tokio::test]
async fn connection_limit_holds_further_clients() {
    let s = start_with(
        ReceiveConfig {
            http: HttpConfig {
                conn_limit: 1,
                ..HttpConfig::default()
            },
            ..ReceiveConfig::default()
        },
        Collect::default(),
        ReceiveMetrics::default(),
    );
    // The first client takes the only slot and sends half a request.
    let mut first = tokio::net::TcpStream::connect(s.handle.local_addr())
        .await
        .unwrap();
    first
        .write_all(b"POST /ingest HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let url = format!("{}{PUSH}", s.base);
    let second = tokio::spawn(async move { post(&url, &[PROTO], good_push()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "second client was served while the slot was taken"
    );
    assert!(s.collect.profiles().is_empty());
    // Once the slot is free the second client is served.
    drop(first);
    assert_eq!(second.await.unwrap().status, 200);
}

#[tokio::test]
async fn read_timeouts() {
    let s = start_with(
        ReceiveConfig {
            http: HttpConfig {
                server_read_timeout: Duration::from_millis(300),
                ..HttpConfig::default()
            },
            ..ReceiveConfig::default()
        },
        Collect::default(),
        ReceiveMetrics::default(),
    );
    let addr = s.handle.local_addr();
    // A client that sends half a body is answered 408.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        format!("POST {PUSH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/proto\r\ncontent-length: 100\r\n\r\nabc").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = slow.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("server_read_timeout"), "{head}");

    // A client that never finishes its headers is disconnected.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"POST /ingest HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(20), idle.read(&mut buf))
        .await
        .expect("connection closed by the header read timeout")
        .unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "{reply}");
}

#[tokio::test]
async fn bind_conflict_is_reported() {
    let s = start();
    let port = s.handle.local_addr().port();
    let err = pyro_receive::Server::new(
        ReceiveConfig {
            http: HttpConfig {
                listen_address: "127.0.0.1".into(),
                listen_port: port,
                ..HttpConfig::default()
            },
            ..ReceiveConfig::default()
        },
        vec![],
    )
    .bind()
    .err()
    .expect("second bind fails");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_requests_are_capped() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let s = start_with(
        ReceiveConfig {
            http: HttpConfig {
                server_read_timeout: Duration::from_millis(300),
                ..HttpConfig::default()
            },
            max_concurrent_requests: 1,
            ..ReceiveConfig::default()
        },
        Collect {
            gate: Some(gate.clone()),
            ..Collect::default()
        },
        ReceiveMetrics::default(),
    );
    let url = format!("{}{PUSH}", s.base);
    let u = url.clone();
    let first = tokio::spawn(async move { post(&u, &[PROTO], good_push()).await });
    s.collect.entered.notified().await;
    // The only slot is taken by a request waiting on its receiver: the next one is refused
    // as retryable once it has waited `server_read_timeout` for a slot.
    let r = post(&url, &[PROTO], good_push()).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (429, Some("resource_exhausted"))
    );
    assert!(r.text().contains("max_concurrent_requests"), "{}", r.text());
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(post(&url, &[PROTO], good_push()).await.status, 200);
}

/// The pprof made from folded text reads back in `go tool pprof` (an independent decoder) with
/// the stacks and values sent.
#[tokio::test]
async fn folded_conversion_reads_back_in_go_tool_pprof() {
    let s = start();
    let r = post(
        &format!(
            "{}/ingest?name=shop.cpu&sampleRate=100&format=folded",
            s.base
        ),
        &[],
        "main;checkout;price 7\nmain;idle 3\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = s.collect.profiles().pop().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("shop.pb");
    std::fs::write(&file, &p.raw).unwrap();
    let Some(out) = pyro_testkit::go_pprof(&["-traces"], &file) else {
        return;
    };
    // 7 samples at 100 Hz are 70 ms of CPU; `-traces` prints leaf first.
    assert!(out.contains("Type: cpu"), "{out}");
    let price = out
        .split("-----------+")
        .find(|t| t.contains("price"))
        .unwrap_or_else(|| panic!("no trace with price in {out}"));
    assert!(price.contains("70ms"), "{price}");
    let lines: Vec<&str> = price
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("---"))
        .collect();
    let frames: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(frames, ["price", "checkout", "main"], "{price}");
}
