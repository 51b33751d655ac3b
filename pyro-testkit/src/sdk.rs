//! The official Pyroscope SDK clients the receive tests push with: whether one is installed,
//! and the Python workload both the receiver's and the end-to-end tests run.

use std::path::Path;
use std::process::Output;

/// A Python program that profiles itself with `pyroscope-io`: application `{app}` pushing to
/// `$PYRO_URL` every second with the tags given as a Python dict literal, while burning CPU in
/// `busy_checkout` for `$PYRO_SECONDS` seconds (default `{seconds}`).
pub fn python_sdk_program(app: &str, tags: &str, seconds: u32) -> String {
    format!(
        r#"
import os, time
import pyroscope

pyroscope.configure(
    application_name="{app}",
    server_address=os.environ["PYRO_URL"],
    sample_rate=100,
    upload_interval=1,
    tags={tags},
)

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def busy_checkout(seconds):
    end = time.time() + seconds
    while time.time() < end:
        fib(18)

busy_checkout(float(os.environ.get("PYRO_SECONDS", "{seconds}")))
pyroscope.shutdown()
"#
    )
}

/// Whether `python` can import the Python SDK (`pyroscope-io`). Skips with a message when not,
/// or fails under `PYRO_REQUIRE_TOOLS=1`.
///
/// # Panics
/// When the SDK is missing and `PYRO_REQUIRE_TOOLS=1`.
pub fn python_sdk(python: &Path) -> bool {
    let probe = std::process::Command::new(python)
        .args(["-c", "import pyroscope"])
        .output()
        .expect("run python3");
    installed(
        "the Python SDK pyroscope-io",
        &probe,
        "pip install pyroscope-io==1.4.0",
    )
}

/// Whether a probe of an SDK (`node -e "require(...)"`, `python -c "import ..."`) succeeded;
/// skips with a message when not, or fails under `PYRO_REQUIRE_TOOLS=1`.
///
/// # Panics
/// When the probe failed and `PYRO_REQUIRE_TOOLS=1`.
pub fn installed(what: &str, probe: &Output, install: &str) -> bool {
    if probe.status.success() {
        return true;
    }
    assert!(
        !crate::required("PYRO_REQUIRE_TOOLS"),
        "{what} is not installed and PYRO_REQUIRE_TOOLS=1: {install}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    eprintln!("SKIPPED: {what} is not installed ({install})");
    false
}
