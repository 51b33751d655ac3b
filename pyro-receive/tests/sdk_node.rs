//! The official Node.js SDK (`@pyroscope/nodejs` from npm) profiles a busy Node program and
//! pushes into the server (it uses `/ingest` with a raw pprof body).

mod common;

use std::time::Duration;

use common::{assert_sdk_profile, sdk_installed, start};

const PROGRAM: &str = r#"
const Pyroscope = require('@pyroscope/nodejs');

Pyroscope.init({
  serverAddress: process.env.PYRO_URL,
  appName: 'node-shop',
  flushIntervalMs: 1000,
  tags: { team: 'frontend', region: 'us-east' },
});
Pyroscope.start();

function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
function busyCheckout(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) fib(20);
}

(async () => {
  const deadline = Date.now() + Number(process.env.PYRO_SECONDS || 4) * 1000;
  while (Date.now() < deadline) {
    busyCheckout(100);
    await new Promise((r) => setTimeout(r, 5));
  }
  await Pyroscope.stop();
})();
"#;

/// `NODE_PATH` with npm's global module directory added, where CI installs the SDK.
fn node_path() -> String {
    let mut paths: Vec<String> = std::env::var("NODE_PATH")
        .ok()
        .filter(|p| !p.is_empty())
        .into_iter()
        .collect();
    if let Some(npm) = pyro_testkit::tool("npm") {
        let out = std::process::Command::new(npm)
            .args(["root", "-g"])
            .output()
            .unwrap();
        if out.status.success() {
            paths.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    paths.join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_pushes_profiles() {
    let Some(node) = pyro_testkit::tool("node") else {
        return;
    };
    let node_path = node_path();
    let probe = std::process::Command::new(&node)
        .args(["-e", "require('@pyroscope/nodejs')"])
        .env("NODE_PATH", &node_path)
        .output()
        .unwrap();
    if !sdk_installed(
        "the Node.js SDK @pyroscope/nodejs",
        &probe,
        "npm install -g @pyroscope/nodejs",
    ) {
        return;
    }
    let s = start();
    let mut child = tokio::process::Command::new(&node)
        .args(["-e", PROGRAM])
        .env("PYRO_URL", &s.base)
        .env("NODE_PATH", &node_path)
        .env("DEBUG", "pyroscope")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("node program finished")
        .unwrap();
    assert!(status.success(), "node program failed: {status}");
    let p = s
        .collect
        .wait_for(Duration::from_secs(10), |p| {
            p.service_name() == Some("node-shop")
                && pyro_core::pprof::decode(&p.raw, 1 << 24).is_ok_and(|pp| {
                    pyro_core::pprof::folded(&pp, pp.default_sample_index())
                        .iter()
                        .any(|st| st.frames.iter().any(|f| f.contains("busyCheckout")))
                })
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no profile with busyCheckout from node-shop; got {:?}",
                s.collect
                    .profiles()
                    .iter()
                    .map(|p| p.labels.to_string())
                    .collect::<Vec<_>>()
            )
        });
    assert_sdk_profile(
        &p,
        "node-shop",
        &[("team", "frontend"), ("region", "us-east")],
    );
    assert_eq!(p.labels.get("pyroscope_spy"), Some("nodespy"));
    eprintln!("node SDK labels: {}", p.labels);
}
