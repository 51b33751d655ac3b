//! The official Rust SDK (the `pyroscope` crate) producing a case of Pyroscope's ingest limits
//! by itself: its thread tags travel as pprof *sample* labels, which Pyroscope promotes to
//! series labels, so an agent whose series labels fit the 30-name limit breaks it once a
//! thread is tagged. The receiver refuses those pushes (counted by rule) and accepts the same
//! agent without thread tags.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{Collect, start_with};
use pyro_receive::{ReceiveConfig, ReceiveMetrics};
use pyroscope::backend::{BackendConfig, PprofConfig, pprof_backend};
use pyroscope::pyroscope::PyroscopeAgentBuilder;

#[inline(never)]
fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        black_box(fib(n - 1)) + fib(n - 2)
    }
}

#[inline(never)]
fn busy_tagged(duration: Duration) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        black_box(fib(black_box(22)));
    }
}

/// Runs an agent with 22 tags (plus the SDK's own `__name__`, `service_name`, `otel.scope.*`,
/// `process.runtime.*`: at most 28 series labels) for 3 s, the busy thread carrying
/// `thread_tags` thread tags.
fn run_agent(base: &str, service: &str, thread_tags: usize) {
    let tags: Vec<(String, String)> = (0..22).map(|i| (format!("t{i}"), "v".into())).collect();
    let agent = PyroscopeAgentBuilder::new(
        base,
        service,
        100,
        "pyroscope-rs",
        "2.1.5",
        pprof_backend(PprofConfig { sample_rate: 100 }, BackendConfig::default()),
    )
    .tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
    .upload_interval(Duration::from_secs(1))
    .build()
    .expect("agent builds");
    let running = agent.start().expect("agent starts");
    let (add, remove) = running.tag_wrapper();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..thread_tags {
                add(format!("req{i}"), "x".into()).expect("thread tag");
            }
            busy_tagged(Duration::from_secs(3));
            for i in 0..thread_tags {
                remove(format!("req{i}"), "x".into()).expect("thread tag removed");
            }
        });
    });
    let ready = running.stop().expect("agent stops");
    ready.shutdown();
}

fn counter(registry: &prometheus_client::registry::Registry, line: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_thread_tags_count_toward_the_label_limit() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ReceiveMetrics::register(&mut registry);
    let s = start_with(ReceiveConfig::default(), Collect::default(), metrics);
    let refused = r#"pyroscope_receive_http_profiles_refused_total{endpoint="push",reason="max_label_names_per_series"}"#;

    // 8 thread tags: at most 28 series labels + 8 promoted names > 30.
    let base = s.base.clone();
    tokio::task::spawn_blocking(move || run_agent(&base, "rust-tagged", 8))
        .await
        .unwrap();
    let tagged: Vec<_> = s
        .collect
        .profiles()
        .into_iter()
        .filter(|p| p.service_name() == Some("rust-tagged"))
        .collect();
    let n_refused = counter(&registry, refused);
    assert!(
        n_refused >= 1.0,
        "the SDK's tagged pushes were refused by max_label_names_per_series"
    );
    // Profiles uploaded while no sample carried the tags (the agent's first or last
    // interval) may pass; none that did is forwarded.
    for p in &tagged {
        let pprof = pyro_core::pprof::decode(&p.raw, 1 << 24).unwrap();
        let sets = pyro_core::limits::series_label_sets(&p.labels, &pprof);
        assert!(
            sets.iter().all(|l| l.len() <= 30),
            "a forwarded profile breaks the limit: {}",
            p.labels
        );
    }

    // The same agent without thread tags: every push fits.
    let base = s.base.clone();
    tokio::task::spawn_blocking(move || run_agent(&base, "rust-untagged", 0))
        .await
        .unwrap();
    assert_eq!(
        counter(&registry, refused),
        n_refused,
        "no untagged push refused"
    );
    let untagged: Vec<_> = s
        .collect
        .profiles()
        .into_iter()
        .filter(|p| p.service_name() == Some("rust-untagged"))
        .collect();
    assert!(!untagged.is_empty(), "the untagged agent's profiles arrive");
    let names = untagged[0].labels.len();
    assert!(
        names + 8 > 30 && names <= 30,
        "the series alone fits ({names} names), the tags push it over"
    );
    eprintln!(
        "rust SDK: {n_refused} tagged pushes refused, {} untagged forwarded ({names} series labels)",
        untagged.len()
    );
}

/// The official Python SDK (`pyroscope-io`, which pushes with Connect `Push`) with 30 tags:
/// with `__name__` and `service_name` each series has more than 30 names, so every upload is
/// refused by `max_label_names_per_series` and none is forwarded; the same program with 3 tags
/// is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_with_too_many_tags_is_refused_by_rule() {
    let Some(python) = pyro_testkit::tool("python3") else {
        return;
    };
    if !pyro_testkit::sdk::python_sdk(&python) {
        return;
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ReceiveMetrics::register(&mut registry);
    let s = start_with(ReceiveConfig::default(), Collect::default(), metrics);
    let refused = r#"pyroscope_receive_http_profiles_refused_total{endpoint="push",reason="max_label_names_per_series"}"#;
    let tags = |n: usize| {
        let pairs: Vec<String> = (0..n).map(|i| format!("\"t{i}\": \"v\"")).collect();
        format!("{{{}}}", pairs.join(", "))
    };
    for (app, n) in [("py.many", 30), ("py.few", 3)] {
        common::run_client(
            "python program",
            tokio::process::Command::new(&python)
                .args([
                    "-c",
                    &pyro_testkit::sdk::python_sdk_program(app, &tags(n), 3),
                ])
                .env("PYRO_URL", &s.base),
        )
        .await;
    }
    let n_refused = counter(&registry, refused);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(n_refused >= 1.0, "the 30-tag uploads were refused:\n{text}");
    let got = s.collect.profiles();
    assert!(
        got.iter().all(|p| p.service_name() != Some("py.many")),
        "no 30-tag profile forwarded"
    );
    common::wait_for_sdk_profile(&s.collect, "py.few", "busy_checkout").await;
    eprintln!("python SDK: {n_refused} uploads with 30 tags refused");
}
