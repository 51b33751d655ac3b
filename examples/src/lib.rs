//! Starter templates for pyro: each program in `examples/` wires a few pyro crates into a
//! working pipeline in a page of commented Rust, the way a host application would.
//!
//! This small library holds what the examples share and what a real host would get from its
//! own framework: log setup, error reporting for `main` and a progress line for long runs. Each
//! example reads its command line with `clap` (`--help` lists the flags; an unknown flag or a
//! bad value is an error naming it, exit code 2); durations are spelled as in Alloy (Go syntax,
//! `"30s"`, `"1m30s"`), parsed by [`pyro_core::config::parse_duration`].
//! [`pipelines`] wires the Alloy pipelines of the `ebpf_to_pyroscope` and
//! `receive_enrich_write` examples, so that the examples and the end-to-end test
//! (`examples/tests/e2e.rs`) run the same code.
#![deny(missing_docs)]

pub mod pipelines;

use std::error::Error;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Installs a `tracing` subscriber printing to stderr, filtered by `RUST_LOG` (default `info`).
/// Lines are coloured only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>), so a log piped to a file holds no escape codes.
/// Libraries never do this; the program that owns `main` does.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .try_init();
}

/// Whether to colour output: only on a terminal, and not when `NO_COLOR` is set to a non-empty
/// value.
///
/// ```
/// use std::ffi::OsStr;
/// use pyro_examples::use_colour;
/// assert!(use_colour(true, None));
/// assert!(use_colour(true, Some(OsStr::new(""))));
/// assert!(!use_colour(true, Some(OsStr::new("1"))));
/// assert!(!use_colour(false, None));
/// ```
pub fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Ends `main`: on error prints `error: <message>` to stderr (the error's `Display`, followed by
/// the causes its message does not already include) and returns a failure exit code.
///
/// ```
/// use std::process::ExitCode;
/// assert_eq!(pyro_examples::exit_code(Ok(())), ExitCode::SUCCESS);
/// ```
pub fn exit_code(result: Result<(), Box<dyn Error + Send + Sync>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&*e));
            ExitCode::FAILURE
        }
    }
}

/// `error`'s message followed by each cause that the text so far does not already contain
/// (errors often print their cause inside their own message).
///
/// ```
/// let e = std::io::Error::other("disk full");
/// assert_eq!(pyro_examples::error_text(&e), "disk full");
/// ```
pub fn error_text(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
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

/// Shuts a pipeline down with `shutdown` (one call on its first stage, see
/// [`pyro_core::lifecycle`]), saying so before and after: `"done: <summary> <where>"`, plus a
/// note and the reason when not everything was delivered in time.
pub async fn stop_and_report(
    doing: &str,
    shutdown: impl std::future::Future<Output = Result<(), pyro_core::LifecycleError>>,
    summary: impl FnOnce() -> String,
    destination: &str,
) {
    eprintln!("stopping: {doing}…");
    let result = shutdown.await;
    let note = match &result {
        Ok(()) => String::new(),
        Err(e) => format!(" (not everything was delivered: {e})"),
    };
    eprintln!("done: {} {destination}{note}", summary());
}

/// A directory output that prints the path of every file it writes to stdout (one line per
/// profile: the `.pb.gz`, then the `.svg` when there is one) and counts the profiles. The
/// directory is created with the first profile, so a run that fails before profiling leaves
/// nothing behind.
#[derive(Debug)]
pub struct PrintWritten {
    dir: std::path::PathBuf,
    sink: std::sync::OnceLock<pyro_file::FileSink>,
    count: std::sync::atomic::AtomicUsize,
}

impl PrintWritten {
    /// Writes into `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sink: std::sync::OnceLock::new(),
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Profiles written so far.
    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn sink(&self) -> Result<&pyro_file::FileSink, pyro_core::AppendError> {
        if let Some(sink) = self.sink.get() {
            return Ok(sink);
        }
        let sink = pyro_file::FileSink::new(&self.dir).map_err(pyro_core::AppendError::internal)?;
        Ok(self.sink.get_or_init(|| sink))
    }
}

#[pyro_core::async_trait]
impl pyro_core::Receiver for PrintWritten {
    async fn append(&self, profile: pyro_core::Profile) -> Result<(), pyro_core::AppendError> {
        use pyro_core::Sink as _;
        let sink = self.sink()?;
        let written = sink.write(&profile).map_err(|e| {
            pyro_core::AppendError::from(pyro_core::SinkError::retryable(sink.name(), e))
        })?;
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match written.svg {
            Some(svg) => println!("{} {}", written.pprof.display(), svg.display()),
            None => println!("{}", written.pprof.display()),
        }
        Ok(())
    }
}
