//! The official Node.js SDK (`@pyroscope/nodejs` from npm) profiles a busy Node program and
//! pushes into the server (it uses `/ingest` with a raw pprof body).

mod common;

use common::{assert_sdk_profile, run_client, sdk_installed, start, wait_for_sdk_profile};

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
    run_client(
        "node program",
        tokio::process::Command::new(&node)
            .args(["-e", PROGRAM])
            .env("PYRO_URL", &s.base)
            .env("NODE_PATH", &node_path)
            .env("DEBUG", "pyroscope"),
    )
    .await;
    let p = wait_for_sdk_profile(&s.collect, "node-shop", "busyCheckout").await;
    assert_sdk_profile(
        &p,
        "node-shop",
        &[("team", "frontend"), ("region", "us-east")],
    );
    assert_eq!(p.labels.get("pyroscope_spy"), Some("nodespy"));
    eprintln!("node SDK labels: {}", p.labels);
}
