//! End to end, for real: the two pipelines of the examples, built with the same library calls
//! (`pyro_examples::pipelines`), delivering over HTTP to this project's own receiver standing in
//! for Pyroscope.
//!
//! 1. `ebpf_to_pyroscope`: a busy process (a copy of `yes` under a name of its own) is
//!    discovered, named by the relabel rule, sampled by the eBPF collector and pushed by the
//!    writer; its profiles arrive with `service_name` from the rule and `__name__=process_cpu`.
//!    Needs root.
//! 2. `receive_enrich_write`: the official Python SDK (`pyroscope-io`) pushes to the receiver;
//!    the enricher matches its `pid` tag to the discovered process and copies `process_exe` and
//!    `process_cwd`; the writer pushes to a second receiver, where the profiles arrive with
//!    those labels, checked against `/proc` and the directory the test started the program in.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use pyro_core::pprof::{self, DEFAULT_MAX_DECODED_SIZE, FoldedStack};
use pyro_core::{DynReceiver, Profile};
use pyro_discovery::process::ProcessDiscoveryConfig;
use pyro_ebpf::EbpfConfig;
use pyro_examples::pipelines::{
    EbpfToPyroscope, Output, ReceiveEnrichWrite, enrich_by_pid, process_metadata_rules,
    service_name_from_exe, write_to,
};
use pyro_receive::{Server, ServerHandle};
use pyro_testkit::Recorder;

/// A `pyro_receive::Server` on a free loopback port, collecting what it receives: the
/// Pyroscope the pipelines push to.
fn fake_pyroscope() -> (ServerHandle, Arc<Recorder>, String) {
    let collect = Arc::new(Recorder::default());
    let config = pyro_receive::ReceiveConfig {
        http: pyro_receive::HttpConfig {
            listen_address: "127.0.0.1".into(),
            listen_port: 0,
            ..pyro_receive::HttpConfig::default()
        },
        ..pyro_receive::ReceiveConfig::default()
    };
    let (handle, serve) = Server::new(config, vec![collect.clone() as DynReceiver])
        .bind()
        .expect("bind the stand-in Pyroscope");
    tokio::spawn(serve);
    let url = format!("http://{}", handle.local_addr());
    (handle, collect, url)
}

fn stacks(p: &Profile) -> Vec<FoldedStack> {
    let decoded = pprof::decode(&p.raw, DEFAULT_MAX_DECODED_SIZE).expect("the pprof decodes");
    pprof::folded(&decoded, decoded.default_sample_index())
}

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_profiles_of_a_busy_process_reach_pyroscope_with_relabelled_labels() {
    if !pyro_testkit::bpf_available() {
        return;
    }
    let Some(yes) = pyro_testkit::tool("yes") else {
        return;
    };
    // The workload: `yes > /dev/null` (one CPU busy), under a name no other process has, so
    // the relabel rule (service_name = executable's file name) names it `pyro_e2e_busy`.
    let dir = tempfile::tempdir().unwrap();
    let busy = dir.path().join("pyro_e2e_busy");
    std::fs::copy(&yes, &busy).unwrap();
    let workload = Child(
        pyro_testkit::spawn(std::process::Command::new(&busy).stdout(std::process::Stdio::null()))
            .expect("start the workload"),
    );
    let pid = workload.0.id();

    let (server, pyroscope, url) = fake_pyroscope();
    let mut registry = Registry::default();
    let pipeline = EbpfToPyroscope::start(
        ProcessDiscoveryConfig {
            refresh_interval: Duration::from_secs(2),
            ..ProcessDiscoveryConfig::default()
        },
        &service_name_from_exe(),
        EbpfConfig {
            collect_interval: Duration::from_secs(2),
            ..EbpfConfig::default()
        },
        write_to(&url),
        &mut registry,
    )
    .expect("start the pipeline (root, BPF)");

    let busy_profile = |p: &Profile| p.service_name() == Some("pyro_e2e_busy");
    let got = pyroscope
        .wait_for(Duration::from_secs(30), busy_profile)
        .await;
    let sent = pipeline.sent.summary();
    let delivered = pipeline
        .shutdown(std::time::Instant::now() + Duration::from_secs(10))
        .await
        .is_ok();
    server.stop();
    let p = got.unwrap_or_else(|| {
        panic!(
            "no profile of pyro_e2e_busy (pid {pid}) arrived; sent {sent}; labels seen: {:#?}",
            pyroscope.labels_seen()
        )
    });
    assert!(
        delivered,
        "the writer did not deliver everything at shutdown"
    );

    // Labels as Pyroscope receives them: the profile type, the service from the relabel rule;
    // reserved labels (`__process_pid__`, `__meta_*`) were dropped by the writer.
    assert_eq!(
        p.labels.get("__name__"),
        Some("process_cpu"),
        "{}",
        p.labels
    );
    assert_eq!(p.labels.get("service_name"), Some("pyro_e2e_busy"));
    assert!(
        p.labels
            .iter()
            .all(|l| l.name() == "__name__" || !l.name().starts_with("__")),
        "reserved labels reached Pyroscope: {}",
        p.labels
    );
    p.labels.validate().expect("valid labels");

    // The payload: CPU samples of that process, its name as the root frame.
    let stacks = stacks(&p);
    assert!(!stacks.is_empty(), "profile has no samples");
    for s in &stacks {
        assert_eq!(s.frames.first().map(String::as_str), Some("pyro_e2e_busy"));
    }
    let nanos: i64 = stacks.iter().map(|s| s.value).sum();
    assert!(nanos > 0, "CPU time of the busy process is {nanos} ns");
    assert!(
        stacks.iter().any(|s| s.frames.len() > 1),
        "only root frames: {stacks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_profiles_are_enriched_with_discovery_labels_and_written() {
    let Some(python) = pyro_testkit::tool("python3") else {
        return;
    };
    if !pyro_testkit::sdk::python_sdk(&python) {
        return;
    }
    let (server, pyroscope, url) = fake_pyroscope();
    let mut registry = Registry::default();
    let pipeline = ReceiveEnrichWrite::start(
        pyro_receive::ReceiveConfig {
            http: pyro_receive::HttpConfig {
                listen_address: "127.0.0.1".into(),
                listen_port: 0,
                ..pyro_receive::HttpConfig::default()
            },
            ..pyro_receive::ReceiveConfig::default()
        },
        ProcessDiscoveryConfig {
            refresh_interval: Duration::from_millis(500),
            ..ProcessDiscoveryConfig::default()
        },
        &process_metadata_rules(),
        enrich_by_pid(),
        Output::Write(write_to(&url)),
        &mut registry,
    )
    .expect("start the pipeline");

    // The SDK client, started in a directory of its own (its `process_cwd`).
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path: PathBuf = cwd.path().canonicalize().unwrap();
    let child = Child(
        std::process::Command::new(&python)
            .args([
                "-c",
                &pyro_testkit::sdk::python_sdk_program(
                    "py.e2e",
                    r#"{"pid": str(os.getpid()), "team": "payments"}"#,
                    6,
                ),
            ])
            .current_dir(&cwd_path)
            .env(
                "PYRO_URL",
                format!("http://{}", pipeline.server.local_addr()),
            )
            .spawn()
            .expect("start the python program"),
    );
    let pid = child.0.id().to_string();
    let enriched = |p: &Profile| {
        p.labels.get("pid") == Some(pid.as_str()) && p.labels.get("process_exe").is_some()
    };
    let got = pyroscope.wait_for(Duration::from_secs(60), enriched).await;
    let (matched, unmatched) = (
        pipeline.enricher.metrics().enriched(),
        pipeline.enricher.metrics().unmatched(),
    );
    // What discovery must have found, read independently while the program still runs (not
    // at spawn: `python3` may be a wrapper that execs the interpreter).
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    drop(child);
    let clean = pipeline
        .shutdown(std::time::Instant::now() + Duration::from_secs(10))
        .await
        .is_ok();
    server.stop();
    let p = got.unwrap_or_else(|| {
        panic!(
            "no enriched profile of pid {pid}; enricher matched {matched}, unmatched {unmatched}; labels seen: {:#?}",
            pyroscope.labels_seen()
        )
    });
    assert!(clean, "the pipeline did not shut down cleanly");

    // The SDK's own labels…
    assert_eq!(p.service_name(), Some("py.e2e"), "{}", p.labels);
    assert_eq!(p.labels.get("team"), Some("payments"));
    assert_eq!(p.labels.get("__name__"), Some("process_cpu"));
    // …and the ones copied from the discovered process it matched by `pid`.
    assert_eq!(
        p.labels.get("process_exe"),
        Some(exe.as_str()),
        "{}",
        p.labels
    );
    assert_eq!(
        p.labels.get("process_cwd"),
        Some(cwd_path.to_str().unwrap()),
        "{}",
        p.labels
    );
    // The writer's label policy: discovery metadata (`__meta_*`, `__process_pid__`) never
    // reaches Pyroscope.
    assert!(
        p.labels
            .iter()
            .all(|l| l.name() == "__name__" || !l.name().starts_with("__")),
        "{}",
        p.labels
    );
    p.labels.validate().expect("valid labels");
    assert!(matched >= 1);
    // The payload is the SDK's profile, untouched.
    let stacks = stacks(&p);
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f.contains("busy_checkout"))),
        "no busy_checkout frame in {stacks:?}"
    );
}
