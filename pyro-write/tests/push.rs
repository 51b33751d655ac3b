//! What the Writer puts on the wire, checked with independent tools (`protoc --decode_raw`,
//! `go tool pprof`) and against this project's own receiver.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use prometheus_client::registry::Registry;
use pyro_core::{AppendError, AppendErrorKind, DynReceiver, Labels, Profile, Receiver};
use pyro_write::{
    AppendMode, BasicAuth, Compression, EndpointConfig, PUSH_PATH, WriteMetrics, Writer,
    WriterConfig,
};

fn endpoint(url: &str) -> EndpointConfig {
    let mut e = EndpointConfig::new(url);
    e.retry = fast_retry();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_is_a_push_request_protoc_and_go_pprof_can_read() {
    let server = TestServer::ok().await;
    let mut ep = endpoint(&server.url());
    ep.tenant_id = Some("team-a".into());
    ep.basic_auth = Some(BasicAuth {
        username: "123".into(),
        password: Some("s3cret".into()),
        password_file: None,
    });
    ep.headers.insert("X-Extra".into(), "yes".into());
    ep.compression = Compression::Gzip;
    let mut config = WriterConfig::default();
    config
        .external_labels
        .insert("cluster".into(), "eu-1".into());
    config.external_labels.insert("env".into(), "prod".into());
    config.endpoints.push(ep);
    config.append_mode = AppendMode::WaitForDelivery;
    let writer = Writer::builder(config).spawn().unwrap();

    let raw = pprof("busy_loop");
    let labels = Labels::from_iter([
        ("__name__", "process_cpu"),
        ("__delta__", "false"),
        ("__meta_process_pid", "42"),
        ("__process_pid__", "42"),
        ("service_name", "checkout"),
        ("env", "dev"),
    ]);
    writer
        .append(Profile::new(labels, raw.clone()).with_id("id-1"))
        .await
        .unwrap();

    let reqs = server.captured();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.path, PUSH_PATH);
    let h = &req.headers;
    assert_eq!(h["content-type"], "application/proto");
    assert_eq!(h["connect-protocol-version"], "1");
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["x-scope-orgid"], "team-a");
    assert_eq!(h["x-extra"], "yes");
    // base64("123:s3cret")
    assert_eq!(h["authorization"], "Basic MTIzOnMzY3JldA==");
    assert_eq!(&req.body[..2], b"\x1f\x8b", "request body is gzip");

    // Our own decoding: labels after the policy, payload byte-identical.
    let (labels, got_raw, id) = req.single();
    assert_eq!(
        labels,
        [
            "__delta__=false",
            "__name__=process_cpu",
            "cluster=eu-1",
            "env=prod",
            "service_name=checkout"
        ]
    );
    assert_eq!(got_raw, raw);
    assert_eq!(id, "id-1");

    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("push.bin");
    std::fs::write(&body_path, req.plain_body()).unwrap();
    let pprof_path = dir.path().join("profile.pb.gz");
    std::fs::write(&pprof_path, &got_raw).unwrap();

    // Independent check 1: protoc's raw decoder sees series(1){labels(1){1:name 2:value}…,
    // samples(2){1:raw_profile 2:ID}}.
    if let Some(protoc) = pyro_testkit::tool("protoc") {
        let out = Command::new(protoc)
            .arg("--decode_raw")
            .stdin(std::fs::File::open(&body_path).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for (name, value) in [
            ("__delta__", "false"),
            ("__name__", "process_cpu"),
            ("cluster", "eu-1"),
            ("env", "prod"),
            ("service_name", "checkout"),
        ] {
            let pair = format!("1 {{\n    1: \"{name}\"\n    2: \"{value}\"\n  }}");
            assert!(text.contains(&pair), "missing {pair} in\n{text}");
        }
        assert!(!text.contains("__meta_process_pid") && !text.contains("__process_pid__"));
        assert!(!text.contains("\"dev\""), "external label must win: {text}");
        // The sample: field 1 holds the gzip bytes (protoc prints them escaped: \037\213 is the
        // gzip magic), field 2 the id.
        assert!(text.starts_with("1 {\n"), "{text}");
        assert!(text.contains("  2 {\n    1: \"\\037\\213"), "{text}");
        assert!(text.contains("    2: \"id-1\"\n  }"), "{text}");
    }
    // Independent check 2: the payload is a pprof go tool pprof reads.
    if let Some(top) = pyro_testkit::go_pprof(&["-raw"], &pprof_path) {
        assert!(top.contains("busy_loop"), "{top}");
        assert!(top.contains("handler"), "{top}");
    }
    let _ = writer
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_labels_are_refused_alone_and_counted() {
    let server = TestServer::ok().await;
    let mut registry = Registry::default();
    let mut config = WriterConfig::default();
    config.endpoints.push(endpoint(&server.url()));
    config.append_mode = AppendMode::WaitForDelivery;
    let writer = Writer::builder(config)
        .with_metrics(WriteMetrics::register(&mut registry))
        .spawn()
        .unwrap();

    writer.append(profile("a", "1")).await.unwrap();
    let mut bad = profile("b", "2");
    bad.labels.set("bad-name", "x");
    let err = writer.append(bad).await.unwrap_err();
    assert!(
        matches!(err, AppendError::InvalidLabels(ref e) if e.label_name() == Some("bad-name")),
        "{err}"
    );
    assert_eq!(err.kind(), AppendErrorKind::InvalidInput);
    let mut no_name = profile("c", "3");
    no_name.labels.set("__name__", "");
    assert!(matches!(
        writer.append(no_name).await,
        Err(AppendError::InvalidLabels(_))
    ));
    writer.append(profile("d", "4")).await.unwrap();

    let ids: Vec<_> = server.captured().iter().map(|c| c.single().2).collect();
    assert_eq!(ids, ["1", "4"]);
    assert_eq!(
        metric(
            &registry,
            r#"pyroscope_write_dropped_profiles_total{endpoint="-",reason="invalid_labels"}"#
        ),
        Some(2.0)
    );
    let ep = server.url();
    assert_eq!(
        metric(
            &registry,
            &format!(r#"pyroscope_write_sent_profiles_total{{endpoint="{ep}"}}"#)
        ),
        Some(2.0)
    );
    let sent_bytes = metric(
        &registry,
        &format!(r#"pyroscope_write_sent_bytes_total{{endpoint="{ep}"}}"#),
    )
    .unwrap();
    assert!(sent_bytes > 0.0);
    assert!(
        metric(
            &registry,
            &format!(
                r#"pyroscope_write_latency_seconds_count{{endpoint="{ep}",type="push_endpoint"}}"#
            )
        ) == Some(2.0)
    );
    let _ = writer
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_debug_and_errors() {
    let server =
        TestServer::start(|_, _| Reply::connect_error(401, "unauthenticated", "bad credentials"))
            .await;
    let mut ep = endpoint(&server.url());
    ep.bearer_token = Some("tok-SECRET-123".into());
    let mut config = WriterConfig::default();
    config.endpoints.push(ep);
    config.append_mode = AppendMode::WaitForDelivery;
    let writer = Writer::builder(config.clone()).spawn().unwrap();
    let err = writer.append(profile("a", "1")).await.unwrap_err();
    let shown = format!("{err} {err:?} {writer:?} {config:?}");
    assert!(shown.contains("bad credentials"), "{shown}");
    assert!(!shown.contains("tok-SECRET-123"), "{shown}");
    assert_eq!(
        server.captured()[0].headers["authorization"],
        "Bearer tok-SECRET-123"
    );
    // 401 is permanent: one attempt.
    assert_eq!(server.count(), 1);
    let _ = writer
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compression_gzips_only_plain_payloads() {
    let server = TestServer::ok().await;
    let mut config = WriterConfig::default();
    config.endpoints.push(endpoint(&server.url()));
    config.append_mode = AppendMode::WaitForDelivery;
    let writer = Writer::builder(config).spawn().unwrap();

    let gzipped = profile("svc", "gz");
    let plain_pprof = pyro_core::pprof::gunzip_capped(&gzipped.raw, 1 << 20).unwrap();
    let plain = Profile::new(gzipped.labels.clone(), plain_pprof.clone()).with_id("plain");
    writer.append(gzipped.clone()).await.unwrap();
    writer.append(plain).await.unwrap();

    let reqs = server.captured();
    assert!(reqs[0].headers.get("content-encoding").is_none());
    assert_eq!(reqs[0].single().1, gzipped.raw);
    assert_eq!(reqs[1].headers["content-encoding"], "gzip");
    assert_eq!(&reqs[1].body[..2], b"\x1f\x8b");
    assert_eq!(reqs[1].single().1, plain_pprof);
    let _ = writer
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_pooled_and_kept_alive() {
    let server = TestServer::ok().await;
    let mut config = WriterConfig::default();
    config.endpoints.push(endpoint(&server.url()));
    config.append_mode = AppendMode::WaitForDelivery;
    let writer = Writer::builder(config).spawn().unwrap();
    for i in 0..20 {
        writer.append(profile("svc", &i.to_string())).await.unwrap();
    }
    assert_eq!(server.count(), 20);
    assert_eq!(
        server
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one connection for 20 sequential pushes"
    );
    let _ = writer
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
}

/// Collects what the pyro-receive server forwards.
#[derive(Debug, Default)]
struct Collect(Mutex<Vec<Profile>>);

#[pyro_core::async_trait]
impl Receiver for Collect {
    async fn append(&self, p: Profile) -> Result<(), AppendError> {
        self.0.lock().unwrap().push(p);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_pyro_receive() {
    let collect = Arc::new(Collect::default());
    let config = pyro_receive::ReceiveConfig {
        http: pyro_receive::HttpConfig {
            listen_address: "127.0.0.1".into(),
            listen_port: 0,
            ..pyro_receive::HttpConfig::default()
        },
        ..pyro_receive::ReceiveConfig::default()
    };
    let (handle, serve) = pyro_receive::Server::new(config, vec![collect.clone() as DynReceiver])
        .bind()
        .unwrap();
    let server = tokio::spawn(serve);

    let mut wc = WriterConfig::default();
    wc.endpoints
        .push(endpoint(&format!("http://{}", handle.local_addr())));
    wc.append_mode = AppendMode::WaitForDelivery;
    let writer = Writer::builder(wc).spawn().unwrap();

    let mut sent = Vec::new();
    for i in 0..5 {
        let mut p = profile(&format!("svc-{i}"), &format!("id-{i}"));
        if i % 2 == 1 {
            // A plain payload: the request body is gzipped instead.
            p.raw = pyro_core::pprof::gunzip_capped(&p.raw, 1 << 20)
                .unwrap()
                .into();
        }
        p.labels.set("region", "eu");
        p.labels.set("__delta__", "false");
        sent.push(p.clone());
        writer.append(p).await.unwrap();
    }
    let _ = writer
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
    handle.stop();
    server.await.unwrap().unwrap();

    let got = collect.0.lock().unwrap().clone();
    assert_eq!(got.len(), sent.len());
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g.labels, s.labels, "labels round-trip exactly");
        assert_eq!(g.raw, s.raw, "profile bytes round-trip exactly");
    }
}
