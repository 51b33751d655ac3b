//! Continuous profiling of this host into Grafana Pyroscope: every process is found by process
//! discovery, named after its executable by a relabel rule, sampled by the eBPF collector, and
//! each `collect_interval` one profile per process is pushed to Pyroscope.
//!
//! ```text
//! # as root (eBPF needs it); a Pyroscope to push to, e.g.
//! #   docker run -p 4040:4040 grafana/pyroscope
//! cargo run --release -p pyro-examples --example ebpf_to_pyroscope -- \
//!     --url http://localhost:4040 [--duration 1m] [--collect-interval 15s] [--refresh 60s]
//! ```
//!
//! Without `--duration` it runs until Ctrl-C. It prints a progress line every 5 s (profiles
//! pushed so far) and, on exit, sends what was sampled since the last push and waits for the
//! writer to deliver it. The same pipeline in Alloy's configuration language:
//!
//! ```text
//! discovery.process "all" { }
//! discovery.relabel "named" {
//!   targets = discovery.process.all.targets
//!   rule {
//!     source_labels = ["__meta_process_exe"]
//!     regex         = ".*/(.*)"
//!     target_label  = "service_name"
//!   }
//! }
//! pyroscope.ebpf "host" {
//!   targets    = discovery.relabel.named.output
//!   forward_to = [pyroscope.write.pyroscope.receiver]
//! }
//! pyroscope.write "pyroscope" {
//!   endpoint { url = "http://localhost:4040" }
//! }
//! ```
//!
//! The wiring (which future is spawned, how discovery feeds the collector, the shutdown order)
//! is [`pyro_examples::pipelines::EbpfToPyroscope`]; the end-to-end test runs the same code.

use std::error::Error;
use std::time::Duration;

use prometheus_client::registry::Registry;
use pyro_discovery::process::ProcessDiscoveryConfig;
use pyro_ebpf::EbpfConfig;
use pyro_examples::pipelines::{EbpfToPyroscope, service_name_from_exe, write_to};
use pyro_examples::{Args, init_tracing, wait_with_status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    init_tracing();
    let args = Args::from_env();
    let Some(url) = args.value("--url") else {
        return Err("usage: ebpf_to_pyroscope --url http://localhost:4040 [--duration 1m]".into());
    };
    let duration = match args.value("--duration") {
        Some(_) => Some(args.duration("--duration", Duration::ZERO)?),
        None => None,
    };

    // discovery.process: rescan /proc every `refresh_interval` (Alloy's default 60 s).
    let discovery = ProcessDiscoveryConfig {
        refresh_interval: args.duration("--refresh", Duration::from_secs(60))?,
        ..ProcessDiscoveryConfig::default()
    };
    // pyroscope.ebpf: Alloy's defaults (97 Hz, 15 s), targets and forward_to set by the pipeline.
    let ebpf = EbpfConfig {
        collect_interval: args.duration("--collect-interval", Duration::from_secs(15))?,
        ..EbpfConfig::default()
    };
    // One registry for every stage's metrics (a real host would serve it on /metrics).
    let mut registry = Registry::default();
    let pipeline = EbpfToPyroscope::start(
        discovery,
        &service_name_from_exe(),
        ebpf.clone(),
        write_to(url),
        &mut registry,
    )?;
    eprintln!(
        "profiling every process at {} Hz, pushing to {url} every {:?}",
        ebpf.sample_rate, ebpf.collect_interval
    );

    let sent = pipeline.sent.clone();
    wait_with_status("pushing", duration, Duration::from_secs(5), || {
        sent.summary()
    })
    .await;

    eprintln!("stopping: sending the last interval and flushing the writer…");
    let delivered = pipeline
        .shutdown(std::time::Instant::now() + Duration::from_secs(10))
        .await
        .is_ok();
    eprintln!(
        "done: {} handed to the writer for {url}{}",
        sent.summary(),
        if delivered {
            ""
        } else {
            " (some profiles could not be delivered; see the log)"
        }
    );
    Ok(())
}
