//! Pyroscope's ingest limits over real HTTP: each rule sent to the receiver as a client would
//! send it, answered 400 `invalid_argument` naming the rule, nothing of the refused profile
//! forwarded, its neighbours in the same request forwarded (as Pyroscope stores them).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Collect, Reply, post, start_with};
use prost::Message as _;
use pyro_core::limits::IngestLimits;
use pyro_core::pprof::{ProfileBuilder, encode_gzip};
use pyro_core::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
use pyro_receive::{ReceiveConfig, ReceiveMetrics};

const PUSH: &str = "/push.v1.PusherService/Push";
const PROTO: (&str, &str) = ("content-type", "application/proto");

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

fn good() -> Vec<u8> {
    let mut b = cpu();
    b.add_folded(&["main", "work"], &[10_000_000]);
    encode_gzip(&b.build(), 1)
}

fn labels(extra: &[(&str, &str)]) -> Vec<LabelPair> {
    [("__name__", "process_cpu"), ("service_name", "limits")]
        .iter()
        .chain(extra)
        .map(|(n, v)| LabelPair {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect()
}

/// A request with the case's series first and a good neighbour series after it.
fn request(series_labels: Vec<LabelPair>, raw: Vec<u8>) -> Vec<u8> {
    PushRequest {
        series: vec![
            RawProfileSeries {
                labels: series_labels,
                samples: vec![RawSample {
                    raw_profile: raw.into(),
                    id: String::new(),
                }],
            },
            RawProfileSeries {
                labels: labels(&[("neighbour", "yes")]),
                samples: vec![RawSample {
                    raw_profile: good().into(),
                    id: String::new(),
                }],
            },
        ],
    }
    .encode_to_vec()
}

/// One pprof case per rule: (what, series labels, payload, rule).
fn cases() -> Vec<(&'static str, Vec<LabelPair>, Vec<u8>, &'static str)> {
    let mut cases = Vec::new();

    // 4.5 MiB of function name: a few KiB gzip'd, over 4 MiB decompressed.
    let mut b = cpu();
    let long = "f".repeat(4_500_000);
    b.add_folded(&["main", long.as_str()], &[10_000_000]);
    cases.push((
        "decompressed size",
        labels(&[]),
        encode_gzip(&b.build(), 6),
        "profile_size_limit",
    ));

    let mut b = cpu();
    let leaf = b.frame("f");
    for i in 0..16_001 {
        b.add_sample_with_labels(&[leaf], &[1], &[("i", &i.to_string())]);
    }
    cases.push((
        "samples",
        labels(&[]),
        encode_gzip(&b.build(), 1),
        "samples_limit",
    ));

    let mut b = cpu();
    let leaf = b.frame("f");
    let keys: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    b.add_sample_with_labels(&[leaf], &[1], &pairs);
    cases.push((
        "labels of one sample",
        labels(&[]),
        encode_gzip(&b.build(), 1),
        "sample_labels_limit",
    ));

    let mut b = ProfileBuilder::new(&[("alloc-space", "bytes")]);
    b.set_time(now_nanos(), 0);
    b.add_folded(&["main"], &[1]);
    cases.push((
        "sample type with -",
        labels(&[]),
        encode_gzip(&b.build(), 1),
        "malformed_profile",
    ));

    let mut b = ProfileBuilder::new(&[("cpu", "nano:seconds")]);
    b.set_time(now_nanos(), 0);
    b.add_folded(&["main"], &[1]);
    cases.push((
        "unit with :",
        labels(&[]),
        encode_gzip(&b.build(), 1),
        "malformed_profile",
    ));

    for (what, offset) in [
        ("2 h old", -7_200_000_000_000_i64),
        ("20 min ahead", 1_200_000_000_000),
    ] {
        let mut b = ProfileBuilder::cpu(100);
        b.set_time(now_nanos() + offset, 0);
        b.add_folded(&["main"], &[1]);
        cases.push((
            what,
            labels(&[]),
            encode_gzip(&b.build(), 1),
            "not_in_ingestion_window",
        ));
    }

    // 26 + 2 series labels pass alone; 3 more names from pprof sample labels make 31.
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
        labels(&many),
        encode_gzip(&b.build(), 1),
        "max_label_names_per_series",
    ));

    let long_name = "n".repeat(1025);
    cases.push((
        "label name length",
        labels(&[(long_name.as_str(), "v")]),
        good(),
        "label_name_too_long",
    ));

    let mut b = cpu();
    let leaf = b.frame("f");
    let long_value = "v".repeat(2049);
    b.add_sample_with_labels(&[leaf], &[1], &[("k", long_value.as_str())]);
    cases.push((
        "sample label value length",
        labels(&[]),
        encode_gzip(&b.build(), 1),
        "label_value_too_long",
    ));
    cases
}

fn assert_refused(what: &str, r: &Reply, rule: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    let json = r.json();
    assert_eq!(json["code"], "invalid_argument", "{what}: {json}");
    let message = json["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("rule {rule}")),
        "{what}: message does not name {rule}: {message}"
    );
}

#[tokio::test]
async fn push_refuses_each_rule_and_keeps_the_neighbour() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ReceiveMetrics::register(&mut registry);
    let s = start_with(ReceiveConfig::default(), Collect::default(), metrics);
    let url = format!("{}{PUSH}", s.base);
    let cases = cases();
    for (what, series, raw, rule) in &cases {
        let before = s.collect.profiles().len();
        let r = post(&url, &[PROTO], request(series.clone(), raw.clone())).await;
        assert_refused(what, &r, rule);
        assert!(
            r.text().contains("series[0]"),
            "{what}: the place is named: {}",
            r.text()
        );
        let got = s.collect.profiles();
        assert_eq!(got.len(), before + 1, "{what}: the neighbour is forwarded");
        assert_eq!(got[before].labels.get("neighbour"), Some("yes"), "{what}");
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for (rule, n) in [
        ("profile_size_limit", 1),
        ("malformed_profile", 2),
        ("not_in_ingestion_window", 2),
        ("max_label_names_per_series", 1),
    ] {
        let line = format!(
            r#"pyroscope_receive_http_profiles_refused_total{{endpoint="push",reason="{rule}"}} {n}"#
        );
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }

    // The same series alone, within the limits, are accepted: the rule is what refused them.
    let r = post(&url, &[PROTO], request(labels(&[]), good())).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn limits_are_configurable_and_zero_turns_one_off() {
    let config: ReceiveConfig = serde_json::from_str(
        r#"{"limits": {"max_profile_size_bytes": 0, "max_profile_stacktrace_samples": 0,
            "max_label_names_per_series": 40, "reject_older_than": "3h", "reject_newer_than": "0s"}}"#,
    )
    .unwrap();
    let s = start_with(config, Collect::default(), ReceiveMetrics::default());
    let url = format!("{}{PUSH}", s.base);
    for (what, series, raw, rule) in cases() {
        let r = post(&url, &[PROTO], request(series, raw)).await;
        match rule {
            "profile_size_limit"
            | "samples_limit"
            | "not_in_ingestion_window"
            | "max_label_names_per_series" => {
                assert_eq!(
                    r.status,
                    200,
                    "{what} passes when its limit is off or higher: {}",
                    r.text()
                )
            }
            rule => assert_refused(what, &r, rule),
        }
    }
    assert!(
        serde_json::from_str::<ReceiveConfig>(r#"{"limits": {"max_profile_size": 1}}"#).is_err(),
        "unknown limits are refused by name"
    );
    let tight = ReceiveConfig {
        limits: IngestLimits {
            max_profile_size_bytes: 20,
            ..IngestLimits::default()
        },
        ..ReceiveConfig::default()
    };
    let s = start_with(tight, Collect::default(), ReceiveMetrics::default());
    let r = post(
        &format!("{}{PUSH}", s.base),
        &[PROTO],
        request(labels(&[]), good()),
    )
    .await;
    assert_refused("20-byte limit", &r, "profile_size_limit");
    assert!(r.text().contains("limit: 20)"), "{}", r.text());
    assert!(
        s.collect.profiles().is_empty(),
        "both profiles are over 20 bytes"
    );
    assert!(r.text().contains("1 more profiles"), "{}", r.text());
}

#[tokio::test]
async fn ingest_refuses_each_rule() {
    let s = start_with(
        ReceiveConfig::default(),
        Collect::default(),
        ReceiveMetrics::default(),
    );
    for (what, series, raw, rule) in cases() {
        // Series labels travel in the `name` braces on /ingest.
        let braces: Vec<String> = series
            .iter()
            .filter(|l| !l.name.starts_with("__") && l.name != "service_name")
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        let name = format!("limits{{{}}}", braces.join(","));
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", &name)
            .append_pair("format", "pprof")
            .finish();
        let r = post(&format!("{}/ingest?{query}", s.base), &[], raw).await;
        assert_refused(what, &r, rule);
    }
    // Text formats: `from` is the profile's time.
    let r = post(
        &format!("{}/ingest?name=shop.cpu&from=now-2h&until=now-2h", s.base),
        &[],
        "main;work 3\n",
    )
    .await;
    assert_refused("folded from 2 h ago", &r, "not_in_ingestion_window");
    let braces: Vec<String> = (0..27).map(|i| format!("l{i}=v")).collect();
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", &format!("shop.cpu{{{}}}", braces.join(",")))
        .finish();
    let r = post(&format!("{}/ingest?{query}", s.base), &[], "main;work 3\n").await;
    assert_refused(
        "27 brace labels + 4 of /ingest",
        &r,
        "max_label_names_per_series",
    );
    assert!(s.collect.profiles().is_empty());
    let r = post(
        &format!("{}/ingest?name=shop.cpu&from=now-10s", s.base),
        &[],
        "main;work 3\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
