//! The official Rust SDK (the `pyroscope` crate, pprof-rs backend) profiles this test process
//! while it burns CPU and pushes into the server (Connect Push, gzip'd `application/proto`).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{assert_sdk_profile, start, wait_for_sdk_profile};
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
fn busy_checkout(duration: Duration) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        black_box(fib(black_box(22)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_pushes_profiles() {
    let s = start();
    let agent = PyroscopeAgentBuilder::new(
        &s.base,
        "rust-shop",
        100,
        "pyroscope-rs",
        "2.1.5",
        pprof_backend(PprofConfig { sample_rate: 100 }, BackendConfig::default()),
    )
    .tags(vec![("team", "core"), ("region", "ap-south")])
    .upload_interval(Duration::from_secs(1))
    .build()
    .expect("agent builds");
    let running = agent.start().expect("agent starts");
    tokio::task::spawn_blocking(|| busy_checkout(Duration::from_secs(4)))
        .await
        .unwrap();
    let ready = running.stop().expect("agent stops");
    ready.shutdown();

    let p = wait_for_sdk_profile(&s.collect, "rust-shop", "busy_checkout").await;
    assert_sdk_profile(&p, "rust-shop", &[("team", "core"), ("region", "ap-south")]);
    assert_eq!(p.profile_type(), Some("process_cpu"));
    eprintln!("rust SDK labels: {}", p.labels);
}
