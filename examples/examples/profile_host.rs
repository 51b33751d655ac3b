//! The README's main job: profile every process on this host with eBPF for a while (one
//! `collect_interval`, 15 s, by default) and write one gzipped pprof and one SVG flame graph per
//! process into a directory. No server needed.
//!
//! ```text
//! # as root (eBPF needs it):
//! cargo run --release -p pyro-examples --example profile_host -- --out profiles \
//!     [--duration 15s] [--sample-rate 97]
//! go tool pprof -top profiles/<service>.process_cpu.<time>-<n>.pb.gz
//! go tool pprof -tags profiles/<service>.process_cpu.<time>-<n>.pb.gz   # its labels
//! ```
//!
//! `--help` lists the flags. The pipeline, as Alloy would write it: `discovery.process` →
//! `discovery.relabel` (service name = executable name) → `pyroscope.ebpf` → a directory
//! instead of `pyroscope.write`.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pyro_core::config::parse_duration;
use pyro_core::{DynReceiver, feed};
use pyro_discovery::process::{ProcessDiscoverer, ProcessDiscoveryConfig};
use pyro_discovery::relabel::{RelabelDiscoverer, RelabelRules};
use pyro_ebpf::{Collector, EbpfConfig};
use pyro_examples::pipelines::service_name_from_exe;
use pyro_examples::{PrintWritten, exit_code, init_tracing, wait_with_progress};

/// Profiles every process on this host with eBPF (needs root) and writes one gzipped pprof
/// and one SVG flame graph per process into a directory.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Directory to write the profiles into (created if missing).
    #[arg(long, default_value = "profiles")]
    out: PathBuf,
    /// How long to profile, in Go syntax ("15s", "1m30s").
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// Samples per second on each CPU.
    #[arg(long, default_value_t = 97, value_parser = clap::value_parser!(u32).range(1..))]
    sample_rate: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    exit_code(run(cli).await)
}

async fn run(cli: Cli) -> Result<(), Box<dyn Error + Send + Sync>> {
    let Cli {
        out,
        duration,
        sample_rate,
    } = cli;
    // The output: each profile as .pb.gz + .svg in `out`, each path printed.
    let files = Arc::new(PrintWritten::new(&out));
    // pyroscope.ebpf, forwarding to the directory. Its one collection is the last one, at
    // shutdown: the interval is longer than the run.
    let (collector, run) = Collector::builder(EbpfConfig {
        sample_rate,
        collect_interval: duration + Duration::from_secs(60),
        ..EbpfConfig::default()
    })
    .forward_to([files.clone() as DynReceiver])
    .build()?;
    tokio::spawn(run);
    // discovery.process (rescanned every 5 s) + discovery.relabel: every process is a target,
    // named after its executable (`/usr/bin/python3.11` → `python3.11`).
    let discovery = RelabelDiscoverer::new(
        ProcessDiscoverer::new(ProcessDiscoveryConfig {
            refresh_interval: Duration::from_secs(5),
            ..ProcessDiscoveryConfig::default()
        }),
        RelabelRules::new(&service_name_from_exe())?,
    );
    let (feed, run) = feed(&discovery, [Arc::new(collector.clone()) as _]);
    tokio::spawn(run);
    eprintln!("profiling every process at {sample_rate} Hz for {duration:?}");
    wait_with_progress("profiling", duration, Duration::from_secs(1)).await;
    // Stop discovery; the collector delivers what it sampled, then the directory is complete.
    feed.stop();
    collector
        .shutdown(Instant::now() + Duration::from_secs(60))
        .await?;
    match files.count() {
        0 => eprintln!("no process ran on a CPU while profiling (an idle host): nothing to write"),
        n => eprintln!("wrote {n} profiles to {}/", out.display()),
    }
    Ok(())
}
