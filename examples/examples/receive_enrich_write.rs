//! Profiles pushed by Pyroscope SDKs, enriched with what process discovery knows about the
//! process that sent them, then written to Pyroscope (`--url`) or to a directory (`--out`).
//!
//! ```text
//! cargo run --release -p pyro-examples --example receive_enrich_write -- \
//!     --url http://localhost:4040 [--port 8080] [--refresh 10s] [--duration 1m]
//! cargo run --release -p pyro-examples --example receive_enrich_write -- --out profiles
//! ```
//!
//! Point an SDK at `http://<this host>:8080` and give it the tag `pid=<its process id>`, e.g. in
//! Python (`pip install pyroscope-io`):
//!
//! ```text
//! pyroscope.configure(application_name="shop", server_address="http://localhost:8080",
//!                     tags={"pid": str(os.getpid())})
//! ```
//!
//! Each profile is matched by `pid` to a discovered process and gains `process_exe` and
//! `process_cwd`. Profiles without a `pid` tag, or from a process not (yet) discovered, pass
//! through unchanged. No root needed (but as another user, other users' processes cannot be
//! read). `--help` lists the flags. Without `--duration` it runs until Ctrl-C, printing a
//! progress line every 5 s. The same pipeline in Alloy's configuration language:
//!
//! ```text
//! discovery.process "all" { refresh_interval = "10s" }
//! discovery.relabel "processes" {
//!   targets = discovery.process.all.targets
//!   rule {
//!     source_labels = ["__process_pid__"]
//!     target_label  = "pid"
//!   }
//!   rule {
//!     action      = "labelmap"
//!     regex       = "__meta_process_(exe|cwd)"
//!     replacement = "process_$1"
//!   }
//! }
//! pyroscope.receive_http "sdks" {
//!   http { listen_port = 8080 }
//!   forward_to = [pyroscope.enrich.processes.receiver]
//! }
//! pyroscope.enrich "processes" {
//!   targets            = discovery.relabel.processes.output
//!   target_match_label = "pid"
//!   labels_to_copy     = ["process_exe", "process_cwd"]
//!   forward_to         = [pyroscope.write.pyroscope.receiver]
//! }
//! pyroscope.write "pyroscope" {
//!   endpoint { url = "http://localhost:4040" }
//! }
//! ```
//!
//! The wiring is [`pyro_examples::pipelines::ReceiveEnrichWrite`]; the end-to-end test runs the
//! same code with the Python SDK as the client.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use pyro_core::config::parse_duration;
use pyro_discovery::process::ProcessDiscoveryConfig;
use pyro_examples::pipelines::{
    Output, ReceiveEnrichWrite, enrich_by_pid, process_metadata_rules, write_to,
};
use pyro_examples::{exit_code, init_tracing, stop_and_report, wait_with_status};

/// Receives profiles pushed by Pyroscope SDKs, adds the metadata of the process that sent
/// them (matched by their `pid` tag) and writes them to Pyroscope or to a directory.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Pyroscope to write to, e.g. http://localhost:4040.
    #[arg(long, required_unless_present = "out", conflicts_with = "out")]
    url: Option<String>,
    /// Directory to write .pb.gz + .svg files into instead.
    #[arg(long)]
    out: Option<PathBuf>,
    /// pyroscope.receive_http `listen_port` (all interfaces).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// discovery.process `refresh_interval`: how often /proc is rescanned.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    refresh: Duration,
    /// Stop after this long, in Go syntax ("1m", "30s"); without it, run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    exit_code(run(cli))
}

#[tokio::main]
async fn run(cli: Cli) -> Result<(), Box<dyn Error + Send + Sync>> {
    // Where enriched profiles go: Pyroscope, or a directory of .pb.gz + .svg files (clap has
    // checked that exactly one is given).
    let output = match (cli.url, cli.out) {
        (Some(url), _) => Output::Write(write_to(&url)),
        (None, Some(dir)) => Output::Directory(dir),
        (None, None) => return Err("give --url or --out".into()),
    };
    let duration = cli.duration;

    // pyroscope.receive_http: Alloy's defaults (all interfaces, port 8080).
    let receive = pyro_receive::ReceiveConfig {
        http: pyro_receive::HttpConfig {
            listen_port: cli.port,
            ..pyro_receive::HttpConfig::default()
        },
        ..pyro_receive::ReceiveConfig::default()
    };
    // discovery.process: SDK processes started after a scan are enriched from the next one.
    let discovery = ProcessDiscoveryConfig {
        refresh_interval: cli.refresh,
        ..ProcessDiscoveryConfig::default()
    };
    let mut registry = Registry::default();
    let pipeline = ReceiveEnrichWrite::start(
        receive,
        discovery,
        &process_metadata_rules(),
        enrich_by_pid(),
        output.clone(),
        &mut registry,
    )?;
    let to = match &output {
        Output::Write(w) => w.endpoints[0].url.clone(),
        Output::Directory(d) => format!("{}/", d.display()),
    };
    eprintln!(
        "receiving on http://{} (Push and /ingest), enriching by pid, writing to {to}",
        pipeline.server.local_addr()
    );

    let (sent, enricher) = (pipeline.sent.clone(), pipeline.enricher.clone());
    wait_with_status("forwarding", duration, Duration::from_secs(5), || {
        format!(
            "{} processes known, {} profiles enriched, {} unmatched; {} handed on",
            enricher.target_count(),
            enricher.metrics().enriched(),
            enricher.metrics().unmatched(),
            sent.summary()
        )
    })
    .await;

    stop_and_report(
        "finishing requests in flight and flushing the output",
        pipeline.shutdown(std::time::Instant::now() + Duration::from_secs(10)),
        || sent.summary(),
        &format!("written to {to}"),
    )
    .await;
    Ok(())
}
