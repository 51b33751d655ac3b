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
//! `--help` lists the flags. Without `--duration` it runs until Ctrl-C. It prints a progress
//! line every 5 s (profiles pushed so far) and, on exit, sends what was sampled since the last
//! push and waits for the writer to deliver it. The same pipeline in Alloy's configuration language:
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
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use pyro_core::config::parse_duration;
use pyro_discovery::process::ProcessDiscoveryConfig;
use pyro_ebpf::EbpfConfig;
use pyro_examples::pipelines::{EbpfToPyroscope, service_name_from_exe, write_to};
use pyro_examples::{exit_code, init_tracing, stop_and_report, wait_with_status};

/// Profiles every process on this host with eBPF (needs root) and pushes the profiles to
/// Grafana Pyroscope.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Pyroscope to push to, e.g. http://localhost:4040.
    #[arg(long)]
    url: String,
    /// Stop after this long, in Go syntax ("1m", "30s"); without it, run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// pyroscope.ebpf `collect_interval`: how often one profile per process is pushed.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    collect_interval: Duration,
    /// discovery.process `refresh_interval`: how often /proc is rescanned.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    refresh: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    exit_code(run(cli))
}

#[tokio::main]
async fn run(cli: Cli) -> Result<(), Box<dyn Error + Send + Sync>> {
    let url = cli.url.as_str();
    let duration = cli.duration;

    // discovery.process: rescan /proc every `refresh_interval` (Alloy's default 60 s).
    let discovery = ProcessDiscoveryConfig {
        refresh_interval: cli.refresh,
        ..ProcessDiscoveryConfig::default()
    };
    // pyroscope.ebpf: Alloy's defaults (97 Hz, 15 s), targets and forward_to set by the pipeline.
    let ebpf = EbpfConfig {
        collect_interval: cli.collect_interval,
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

    stop_and_report(
        "sending the last interval and flushing the writer",
        pipeline.shutdown(std::time::Instant::now() + Duration::from_secs(10)),
        || sent.summary(),
        &format!("handed to the writer for {url}"),
    )
    .await;
    Ok(())
}
