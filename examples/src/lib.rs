//! Starter templates for pyro: each program in `examples/` wires a few pyro crates into a
//! working pipeline in a page of commented Rust, the way a host application would.
//!
//! This small library holds what the examples share and what a real host would get from its
//! own framework: log setup, a minimal command line reader and a progress line for long runs.
//! [`pipelines`] wires the Alloy pipelines of the `ebpf_to_pyroscope` and
//! `receive_enrich_write` examples, so that the examples and the end-to-end test
//! (`examples/tests/e2e.rs`) run the same code.
//!
//! ```
//! use std::time::Duration;
//! let args = pyro_examples::Args::parse_from(["--duration", "30s", "--out", "profiles"]);
//! assert_eq!(args.duration("--duration", Duration::from_secs(15)).unwrap(), Duration::from_secs(30));
//! assert_eq!(args.value("--out"), Some("profiles"));
//! assert_eq!(args.value("--url"), None);
//! ```
#![deny(missing_docs)]

pub mod pipelines;

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Installs a `tracing` subscriber printing to stderr, filtered by `RUST_LOG` (default `info`).
/// Libraries never do this; the program that owns `main` does.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `--name value` pairs from the command line.
#[derive(Debug, Clone, Default)]
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Reads the process's arguments.
    pub fn from_env() -> Self {
        Self::parse_from(std::env::args().skip(1))
    }

    /// Reads `--name value` pairs from `args` (a `--name` without value is stored as `"true"`).
    pub fn parse_from<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut values = HashMap::new();
        let mut iter = args.into_iter().map(Into::into).peekable();
        while let Some(arg) = iter.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let value = match iter.peek() {
                    Some(v) if !v.starts_with("--") => iter.next().unwrap_or_default(),
                    _ => "true".to_owned(),
                };
                values.insert(format!("--{name}"), value);
            }
        }
        Self { values }
    }

    /// The value of `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name` parsed as a duration (`15s`, `1m`, `500ms`), or `default`.
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v).map_err(|e| format!("{name} {v:?}: {e}")),
        }
    }
}

/// Sleeps for `total`, printing a progress line to stderr every `every`, or returns early on
/// Ctrl-C. Returns whether the full time elapsed.
pub async fn wait_with_progress(what: &str, total: Duration, every: Duration) -> bool {
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= total {
            eprintln!(
                "[{:>4.0}s/{:.0}s] {what}: done",
                total.as_secs_f64(),
                total.as_secs_f64()
            );
            return true;
        }
        tokio::select! {
            _ = tick.tick() => {
                let e = start.elapsed().min(total);
                eprintln!("[{:>4.0}s/{:.0}s] {what}…", e.as_secs_f64(), total.as_secs_f64());
            }
            _ = tokio::time::sleep(total - elapsed) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted after {:.0}s", start.elapsed().as_secs_f64());
                return false;
            }
        }
    }
}

/// Like [`wait_with_progress`], for runs that may be open-ended: waits for `total` (or until
/// Ctrl-C when `None`), printing `status()` every `every`. Returns whether the full time
/// elapsed (`false` on Ctrl-C).
pub async fn wait_with_status(
    what: &str,
    total: Option<Duration>,
    every: Duration,
    status: impl Fn() -> String,
) -> bool {
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let end = total.map(|t| tokio::time::Instant::now() + t);
    let until_end = async {
        match end {
            Some(end) => tokio::time::sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    let mut until_end = std::pin::pin!(until_end);
    let total_text = total.map_or_else(
        || "until Ctrl-C".to_owned(),
        |t| format!("{:.0}s", t.as_secs_f64()),
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let e = start.elapsed().as_secs_f64();
                eprintln!("[{e:>4.0}s/{total_text}] {what}: {}", status());
            }
            () = &mut until_end => {
                eprintln!("[{:>4.0}s/{total_text}] {what}: done, {}", start.elapsed().as_secs_f64(), status());
                return true;
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted after {:.0}s: {}", start.elapsed().as_secs_f64(), status());
                return false;
            }
        }
    }
}
