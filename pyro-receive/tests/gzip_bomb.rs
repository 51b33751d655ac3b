//! Gzip bombs on every path that inflates are refused with 413, and the process's peak memory
//! grows by about the configured `max_decoded_size`, not by the bomb's inflated size.
//! (Alone in its test binary so no other test moves the peak.)

#![allow(clippy::type_complexity, reason = "a table of test cases")]

mod common;

use std::io::Write as _;

use base64::Engine as _;
use common::{Collect, post, start_with};
use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message as _;
use pyro_core::{Labels, Profile};
use pyro_receive::push::PushRequest;
use pyro_receive::{ReceiveConfig, ReceiveMetrics};

const INFLATED: usize = 512 << 20;
const LIMIT: usize = 4 << 20;

/// 512 MiB of zeros, gzipped (about 0.5 MiB).
fn bomb() -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..INFLATED >> 20 {
        e.write_all(&zeros).unwrap();
    }
    e.finish().unwrap()
}

/// Peak resident set size of this process, in bytes (`VmHWM`).
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

fn push_body(raw: Vec<u8>) -> Vec<u8> {
    let labels = Labels::from_iter([("__name__", "process_cpu")]);
    PushRequest::from_profile(&Profile::new(labels, raw)).encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_are_refused_within_the_limit() {
    let bomb = bomb();
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    let s = start_with(
        ReceiveConfig {
            max_decoded_size: LIMIT,
            ..ReceiveConfig::default()
        },
        Collect::default(),
        ReceiveMetrics::default(),
    );
    let push = format!("{}/push.v1.PusherService/Push", s.base);
    let boundary = "bombboundary";
    let mut multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\n\r\n"
    )
    .into_bytes();
    multipart.extend_from_slice(&bomb);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let json = format!(
        r#"{{"series":[{{"labels":[{{"name":"__name__","value":"process_cpu"}}],"samples":[{{"rawProfile":"{}"}}]}}]}}"#,
        base64::engine::general_purpose::STANDARD.encode(&bomb)
    );
    let multipart_ct = format!("multipart/form-data; boundary={boundary}");

    let baseline = peak_rss();
    let cases: Vec<(&str, String, Vec<(&str, &str)>, Vec<u8>)> = vec![
        (
            "push, Content-Encoding: gzip",
            push.clone(),
            vec![
                ("content-type", "application/proto"),
                ("content-encoding", "gzip"),
            ],
            bomb.clone(),
        ),
        (
            "push, gzip raw_profile",
            push.clone(),
            vec![("content-type", "application/proto")],
            push_body(bomb.clone()),
        ),
        (
            "push json, gzip raw rawProfile",
            push.clone(),
            vec![("content-type", "application/json")],
            json.into_bytes(),
        ),
        (
            "ingest, raw pprof",
            format!("{}/ingest?name=app&format=pprof", s.base),
            vec![],
            bomb.clone(),
        ),
        (
            "ingest, multipart profile",
            format!("{}/ingest?name=app", s.base),
            vec![("content-type", multipart_ct.as_str())],
            multipart,
        ),
        (
            "ingest, folded with Content-Encoding: gzip",
            format!("{}/ingest?name=app.cpu", s.base),
            vec![("content-encoding", "gzip")],
            bomb.clone(),
        ),
    ];
    for (what, url, headers, body) in cases {
        let r = post(&url, &headers, body).await;
        // A bomb in a Push `raw_profile` is one profile over Pyroscope's max_profile_size_bytes
        // (4 MiB, equal to the decoding cap here): 400 naming that rule, as Pyroscope answers.
        // A bomb as the body, or on /ingest, is the request over max_decoded_size: 413.
        if what.contains("raw") && what.starts_with("push") {
            assert_eq!(r.status, 400, "{what}: {}", r.text());
            assert!(
                r.text().contains("rule profile_size_limit"),
                "{what}: {}",
                r.text()
            );
            continue;
        }
        assert_eq!(r.status, 413, "{what}: {}", r.text());
        assert!(
            r.text().contains(&format!("{LIMIT} bytes")),
            "{what}: {}",
            r.text()
        );
    }
    let growth = peak_rss().saturating_sub(baseline);
    eprintln!("peak RSS grew by {} KiB", growth >> 10);
    assert!(
        growth < 8 * LIMIT,
        "peak RSS grew by {growth} bytes for a {LIMIT}-byte limit (bomb inflates to {INFLATED})"
    );
    assert!(s.collect.profiles().is_empty());
}
