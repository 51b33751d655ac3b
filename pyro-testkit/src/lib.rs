//! Test helpers shared by the pyro crates: a recording receiver ([`Recorder`]), the SDK client
//! programs and probes ([`sdk`]), finding the external reference tools tests check
//! against (`go tool pprof`, `protoc`, `perf`, `bpftrace`, SDK clients) and deciding whether an
//! eBPF test can run.
//!
//! Tests that need a tool call [`tool`]: when the tool is missing the test is skipped with a
//! message, unless `PYRO_REQUIRE_TOOLS=1` (set by `.ci/run`), in which case it fails. eBPF tests
//! call [`bpf_available`], which follows `PYRO_REQUIRE_BPF=1` the same way.
//!
//! ```
//! if let Some(go) = pyro_testkit::tool("go") {
//!     // run `go tool pprof` …
//! #   let _ = go;
//! }
//! ```
#![deny(missing_docs)]

pub mod measure;
pub mod recorder;
pub mod sdk;

pub use recorder::Recorder;

use std::path::{Path, PathBuf};
use std::process::Command;

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// The path of executable `name` on `PATH`, or `None` (with a skip message) when it is missing.
///
/// # Panics
/// When the tool is missing and `PYRO_REQUIRE_TOOLS=1`.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !required("PYRO_REQUIRE_TOOLS"),
            "`{name}` is not installed and PYRO_REQUIRE_TOOLS=1 (see .ci/run for how to install it)"
        );
        eprintln!("SKIPPED: `{name}` is not installed; set PYRO_REQUIRE_TOOLS=1 to make this fail");
    }
    found
}

/// Whether eBPF tests can run here (running as root). Prints a skip message when not.
///
/// # Panics
/// When they cannot and `PYRO_REQUIRE_BPF=1`.
pub fn bpf_available() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { geteuid() } == 0;
    if !root {
        assert!(
            !required("PYRO_REQUIRE_BPF"),
            "eBPF tests need root and PYRO_REQUIRE_BPF=1 is set"
        );
        eprintln!("SKIPPED: eBPF tests need root; set PYRO_REQUIRE_BPF=1 to make this fail");
    }
    root
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Whether eBPF tests must not be skipped (`PYRO_REQUIRE_BPF=1`).
pub fn bpf_required() -> bool {
    required("PYRO_REQUIRE_BPF")
}

/// Spawns `command`, retrying while exec fails with `ETXTBSY`.
///
/// A test that writes an executable (a copy, a compiler output) and runs it races with other
/// tests of the same binary: a `fork` in another thread between the write and the exec inherits
/// the still-open write descriptor until that child execs, and the kernel then refuses to run
/// the file ("Text file busy"). The window is microseconds, so a few retries always suffice.
pub fn spawn(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Runs `bpftrace -e <script>` to completion and returns its stdout, or `None` when bpftrace
/// is missing.
///
/// # Panics
/// When bpftrace fails.
pub fn bpftrace(script: &str) -> Option<String> {
    let bpftrace = tool("bpftrace")?;
    let out = Command::new(bpftrace)
        .args(["-e", script])
        .output()
        .expect("run bpftrace");
    assert!(
        out.status.success(),
        "bpftrace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `go tool pprof <args> <file>` and returns its stdout, or `None` when Go is missing.
///
/// # Panics
/// When `go tool pprof` fails on the file.
pub fn go_pprof(args: &[&str], file: &Path) -> Option<String> {
    let go = tool("go")?;
    let out = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
