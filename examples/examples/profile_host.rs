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
use std::time::{Duration, Instant};

use clap::Parser;
use pyro_core::config::parse_duration;
use pyro_discovery::process::{ProcessDiscoveryConfig, scan};
use pyro_discovery::relabel::{RelabelRules, relabel_targets};
use pyro_ebpf::{Collector, EbpfConfig};
use pyro_examples::{exit_code, init_tracing};
use pyro_file::FileSink;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    exit_code(run(cli))
}

fn run(cli: Cli) -> Result<(), Box<dyn Error + Send + Sync>> {
    let Cli {
        out,
        duration,
        sample_rate,
    } = cli;

    // discovery.process + discovery.relabel: every process is a target, named after its
    // executable (`/usr/bin/python3.11` → `python3.11`). A process whose binary was replaced
    // or removed after it started has `__meta_process_exe` = `<path> (deleted)`, as in Alloy;
    // the rule names it after the binary all the same.
    let rules = RelabelRules::new(&pyro_examples::pipelines::service_name_from_exe())?;
    let discovery = ProcessDiscoveryConfig::default();
    let discover = || -> Result<_, Box<dyn Error + Send + Sync>> {
        Ok(relabel_targets(&rules, scan(&discovery)?))
    };

    // pyroscope.ebpf: load the BPF program on every CPU and match samples to the targets.
    let config = EbpfConfig {
        sample_rate,
        ..EbpfConfig::default()
    };
    let mut collector = Collector::new(&config)?;
    let targets = discover()?;
    collector.set_targets(&targets);
    eprintln!(
        "profiling {} processes at {sample_rate} Hz for {duration:?}",
        targets.len()
    );

    // Drain the kernel's samples every 100 ms; look for new processes every 5 s.
    let start = Instant::now();
    let (mut last_scan, mut last_report) = (start, start);
    let mut samples = 0;
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100));
        samples += collector.poll().samples;
        if last_scan.elapsed() >= Duration::from_secs(5) {
            collector.set_targets(&discover()?);
            last_scan = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[{:>3}s/{}s] {samples} samples",
                start.elapsed().as_secs(),
                duration.as_secs()
            );
            last_report = Instant::now();
        }
    }

    // One pprof per process, written as .pb.gz + .svg.
    let sink = FileSink::new(&out)?;
    let profiles = collector.collect();
    for profile in &profiles {
        let written = sink.write(profile)?;
        println!(
            "{}{}",
            written.pprof.display(),
            written
                .svg
                .map(|s| format!(" {}", s.display()))
                .unwrap_or_default()
        );
    }
    if profiles.is_empty() {
        eprintln!("no process ran on a CPU while profiling (an idle host): nothing to write");
    } else {
        eprintln!("wrote {} profiles to {}/", profiles.len(), out.display());
    }
    Ok(())
}
