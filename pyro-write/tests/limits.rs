//! Pyroscope's ingest limits in the writer: every profile Pyroscope would refuse is refused
//! before sending (the server sees nothing), counted by rule, logged once per rule and never
//! retried; the same profiles sent without the check are refused by a real receiver
//! (pyro-receive, which applies the same limits) with 400 naming the same rule.

mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use prometheus_client::registry::Registry;
use pyro_core::limits::IngestLimits;
use pyro_core::pprof::{ProfileBuilder, encode_gzip};
use pyro_core::{AppendError, DynReceiver, Labels, Profile, Receiver};
use pyro_write::{AppendMode, EndpointConfig, WriteMetrics, Writer, WriterConfig};

fn now_nanos() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn cpu() -> ProfileBuilder {
    let mut b = ProfileBuilder::cpu(100);
    b.set_time(now_nanos(), 10_000_000_000);
    b
}

fn labels(extra: &[(&str, &str)]) -> Labels {
    let mut l = Labels::from_iter([("__name__", "process_cpu"), ("service_name", "limits")]);
    for (k, v) in extra {
        l.set(*k, *v);
    }
    l
}

/// One profile per rule: (what, profile, rule). (The same cases as pyro-receive's
/// `tests/limits.rs`.)
fn cases() -> Vec<(&'static str, Profile, &'static str)> {
    let mut cases = Vec::new();
    let gz = |b: ProfileBuilder| Bytes::from(encode_gzip(&b.build(), 6));

    let mut b = cpu();
    let long = "f".repeat(4_500_000);
    b.add_folded(&["main", long.as_str()], &[10_000_000]);
    cases.push((
        "decompressed size",
        Profile::new(labels(&[]), gz(b)),
        "profile_size_limit",
    ));

    let mut b = cpu();
    let leaf = b.frame("f");
    for i in 0..16_001 {
        b.add_sample_with_labels(&[leaf], &[1], &[("i", &i.to_string())]);
    }
    cases.push(("samples", Profile::new(labels(&[]), gz(b)), "samples_limit"));

    let mut b = cpu();
    let leaf = b.frame("f");
    let keys: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    b.add_sample_with_labels(&[leaf], &[1], &pairs);
    cases.push((
        "labels of one sample",
        Profile::new(labels(&[]), gz(b)),
        "sample_labels_limit",
    ));

    for (what, types) in [
        ("sample type with -", ("alloc-space", "bytes")),
        ("unit with :", ("cpu", "nano:seconds")),
    ] {
        let mut b = ProfileBuilder::new(&[types]);
        b.set_time(now_nanos(), 0);
        b.add_folded(&["main"], &[1]);
        cases.push((what, Profile::new(labels(&[]), gz(b)), "malformed_profile"));
    }

    for (what, offset) in [
        ("2 h old", -7_200_000_000_000_i64),
        ("20 min ahead", 1_200_000_000_000),
    ] {
        let mut b = ProfileBuilder::cpu(100);
        b.set_time(now_nanos() + offset, 0);
        b.add_folded(&["main"], &[1]);
        cases.push((
            what,
            Profile::new(labels(&[]), gz(b)),
            "not_in_ingestion_window",
        ));
    }

    let names: Vec<String> = (0..26).map(|i| format!("l{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let mut b = cpu();
    let leaf = b.frame("f");
    b.add_sample_with_labels(
        &[leaf],
        &[1],
        &[("thread", "1"), ("pool", "io"), ("x", "y")],
    );
    cases.push((
        "label names after promotion",
        Profile::new(labels(&many), gz(b)),
        "max_label_names_per_series",
    ));

    let mut b = cpu();
    let leaf = b.frame("f");
    let long_value = "v".repeat(2049);
    b.add_sample_with_labels(&[leaf], &[1], &[("k", long_value.as_str())]);
    cases.push((
        "sample label value length",
        Profile::new(labels(&[]), gz(b)),
        "label_value_too_long",
    ));
    cases
}

fn good() -> Profile {
    let mut b = cpu();
    b.add_folded(&["main", "work"], &[10_000_000]);
    Profile::new(labels(&[]), encode_gzip(&b.build(), 1)).with_id("good")
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: `append` runs on this thread, under the thread-local subscriber.
#[tokio::test]
async fn refused_before_sending_counted_by_rule_and_logged_once() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::ok().await;
    let mut registry = Registry::default();
    let mut ep = EndpointConfig::new(server.url());
    ep.retry = fast_retry();
    let w = Writer::builder(WriterConfig {
        endpoints: vec![ep],
        append_mode: AppendMode::WaitForDelivery,
        ..WriterConfig::default()
    })
    .with_metrics(WriteMetrics::register(&mut registry))
    .spawn()
    .unwrap();
    let cases = cases();
    // Twice each: the second refusal of a rule is counted but not logged at warn again.
    for _ in 0..2 {
        for (what, p, rule) in &cases {
            let e = w.append(p.clone()).await.unwrap_err();
            assert!(matches!(e, AppendError::InvalidProfile(_)), "{what}: {e}");
            assert!(
                e.to_string().contains(&format!("rule {rule}")),
                "{what}: {e}"
            );
        }
    }
    w.append(good()).await.unwrap();
    let ids: Vec<_> = server.captured().iter().map(|c| c.single().2).collect();
    assert_eq!(ids, ["good"], "nothing refused reached the server");
    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for (_, _, rule) in &cases {
        *expected.entry(rule).or_default() += 2.0;
    }
    for (rule, n) in expected {
        let line =
            format!(r#"pyroscope_write_dropped_profiles_total{{endpoint="-",reason="{rule}"}}"#);
        assert_eq!(metric(&registry, &line), Some(n), "{line}");
    }
    assert_eq!(
        metric(&registry, r#"pyroscope_write_retries_total{endpoint=""#).unwrap_or(0.0),
        0.0,
        "never retried"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for rule in [
        "profile_size_limit",
        "samples_limit",
        "sample_labels_limit",
        "malformed_profile",
        "not_in_ingestion_window",
        "max_label_names_per_series",
        "label_value_too_long",
    ] {
        let n = text
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("rule={rule}")))
            .count();
        assert_eq!(n, 1, "{rule} logged once at warn:\n{text}");
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The writer's verdicts match the receiver's: without the check, each case goes out and a
/// pyro-receive server refuses it with 400 naming the same rule (and the writer does not retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_refuses_the_same_profiles() {
    let forwarded = Arc::new(pyro_testkit::Recorder::default());
    let (handle, serve) = pyro_receive::Server::new(
        pyro_receive::ReceiveConfig {
            http: pyro_receive::HttpConfig {
                listen_address: "127.0.0.1".into(),
                listen_port: 0,
                ..Default::default()
            },
            ..Default::default()
        },
        vec![forwarded.clone() as DynReceiver],
    )
    .bind()
    .unwrap();
    tokio::spawn(serve);
    let mut ep = EndpointConfig::new(format!("http://{}", handle.local_addr()));
    ep.retry = fast_retry();
    let mut registry = Registry::default();
    let w = Writer::builder(WriterConfig {
        endpoints: vec![ep],
        append_mode: AppendMode::WaitForDelivery,
        limits: IngestLimits::disabled(),
        ..WriterConfig::default()
    })
    .with_metrics(WriteMetrics::register(&mut registry))
    .spawn()
    .unwrap();
    for (what, p, rule) in cases() {
        let e = w.append(p).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("HTTP 400"), "{what}: {text}");
        assert!(text.contains(&format!("rule {rule}")), "{what}: {text}");
    }
    assert!(forwarded.profiles().is_empty());
    assert_eq!(
        metric(
            &registry,
            &format!(
                r#"pyroscope_write_retries_total{{endpoint="http://{}"}}"#,
                handle.local_addr()
            )
        )
        .unwrap_or(0.0),
        0.0
    );
    w.append(good()).await.unwrap();
    assert_eq!(forwarded.profiles().len(), 1);
}
