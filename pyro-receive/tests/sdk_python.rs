//! The official Python SDK (`pyroscope-io` from PyPI) profiles a busy Python program and pushes
//! into the server.

mod common;

use common::{assert_sdk_profile, run_client, start, wait_for_sdk_profile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_pushes_profiles() {
    let Some(python) = pyro_testkit::tool("python3") else {
        return;
    };
    if !pyro_testkit::sdk::python_sdk(&python) {
        return;
    }
    let s = start();
    run_client(
        "python program",
        tokio::process::Command::new(&python)
            .args([
                "-c",
                &pyro_testkit::sdk::python_sdk_program(
                    "py.shop",
                    r#"{"team": "payments", "region": "eu-west"}"#,
                    4,
                ),
            ])
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
