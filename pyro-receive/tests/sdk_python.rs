//! The official Python SDK (`pyroscope-io` from PyPI) profiles a busy Python program and pushes
//! into the server.

mod common;

use common::{assert_sdk_profile, run_client, sdk_installed, start, wait_for_sdk_profile};

const PROGRAM: &str = r#"
import os, sys, time
import pyroscope

pyroscope.configure(
    application_name="py.shop",
    server_address=os.environ["PYRO_URL"],
    sample_rate=100,
    upload_interval=1,
    tags={"team": "payments", "region": "eu-west"},
)

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def busy_checkout(seconds):
    end = time.time() + seconds
    while time.time() < end:
        fib(18)

busy_checkout(float(os.environ.get("PYRO_SECONDS", "4")))
pyroscope.shutdown()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_pushes_profiles() {
    let Some(python) = pyro_testkit::tool("python3") else {
        return;
    };
    let probe = std::process::Command::new(&python)
        .args(["-c", "import pyroscope"])
        .output()
        .unwrap();
    if !sdk_installed(
        "the Python SDK pyroscope-io",
        &probe,
        "pip install pyroscope-io",
    ) {
        return;
    }
    let s = start();
    run_client(
        "python program",
        tokio::process::Command::new(&python)
            .args(["-c", PROGRAM])
            .env("PYRO_URL", &s.base),
    )
    .await;
    let p = wait_for_sdk_profile(&s.collect, "py.shop", "busy_checkout").await;
    assert_sdk_profile(
        &p,
        "py.shop",
        &[("team", "payments"), ("region", "eu-west")],
    );
    assert_eq!(p.profile_type(), Some("process_cpu"));
    eprintln!("python SDK labels: {}", p.labels);
}
