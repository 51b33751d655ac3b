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
//! read). Without `--duration` it runs until Ctrl-C, printing a progress line every 5 s. The
//! same pipeline in Alloy's configuration language:
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
use std::time::Duration;

use prometheus_client::registry::Registry;
use pyro_discovery::process::ProcessDiscoveryConfig;
use pyro_examples::pipelines::{
    Output, ReceiveEnrichWrite, enrich_by_pid, process_metadata_rules, write_to,
};
use pyro_examples::{Args, init_tracing, wait_with_status};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    init_tracing();
    let args = Args::from_env();
    // Where enriched profiles go: Pyroscope, or a directory of .pb.gz + .svg files.
    let output = match (args.value("--url"), args.value("--out")) {
        (Some(url), None) => Output::Write(write_to(url)),
        (None, Some(dir)) => Output::Directory(dir.into()),
        _ => {
            return Err("usage: receive_enrich_write (--url URL | --out DIR) [--port 8080]".into());
        }
    };
    let duration = match args.value("--duration") {
        Some(_) => Some(args.duration("--duration", Duration::ZERO)?),
        None => None,
    };

    // pyroscope.receive_http: Alloy's defaults (all interfaces, port 8080).
    let receive = pyro_receive::ReceiveConfig {
        http: pyro_receive::HttpConfig {
            listen_port: args.value("--port").unwrap_or("8080").parse()?,
            ..pyro_receive::HttpConfig::default()
        },
        ..pyro_receive::ReceiveConfig::default()
    };
    // discovery.process: SDK processes started after a scan are enriched from the next one.
    let discovery = ProcessDiscoveryConfig {
        refresh_interval: args.duration("--refresh", Duration::from_secs(10))?,
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

    eprintln!("stopping: finishing requests in flight and flushing the output…");
    let clean = pipeline
        .shutdown(std::time::Instant::now() + Duration::from_secs(10))
        .await
        .is_ok();
    eprintln!(
        "done: {} written to {to}{}",
        sent.summary(),
        if clean {
            ""
        } else {
            " (not everything was delivered; see the log)"
        }
    );
    Ok(())
}
