//! The official Python SDK (`pyroscope-io` from PyPI) profiles a busy Python program and pushes
//! into the server.

mod common;

use std::time::Duration;

use common::{assert_sdk_profile, sdk_installed, start};

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
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", PROGRAM])
        .env("PYRO_URL", &s.base)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("python program finished")
        .unwrap();
    assert!(status.success(), "python program failed: {status}");
    let p = s
        .collect
        .wait_for(Duration::from_secs(10), |p| {
            p.service_name() == Some("py.shop")
                && pyro_core::pprof::decode(&p.raw, 1 << 24).is_ok_and(|pp| {
                    pyro_core::pprof::folded(&pp, pp.default_sample_index())
                        .iter()
                        .any(|st| st.frames.iter().any(|f| f.contains("busy_checkout")))
                })
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no profile with busy_checkout from py.shop; got {:?}",
                s.collect
                    .profiles()
                    .iter()
                    .map(|p| p.labels.to_string())
                    .collect::<Vec<_>>()
            )
        });
    assert_sdk_profile(
        &p,
        "py.shop",
        &[("team", "payments"), ("region", "eu-west")],
    );
    assert_eq!(p.profile_type(), Some("process_cpu"));
    eprintln!("python SDK labels: {}", p.labels);
}
