//! The example programs run as their doc comments say: `ebpf_to_pyroscope --url` pushes into
//! `receive_enrich_write --out`, which writes the profiles of a busy process into a directory,
//! and both stop cleanly (one at the end of `--duration`, the other on Ctrl-C).
//!
//! The binaries are the ones `cargo test` builds next to this test (`target/<profile>/examples/`);
//! needs root (eBPF).

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyro_core::pprof::{self, DEFAULT_MAX_DECODED_SIZE};

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An example binary built by `cargo test` (examples are built with the tests).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/examples_run-<hash> → target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run this test through `cargo test -p pyro-examples` (which builds the examples), not with a `--test` filter alone",
        path.display()
    );
    path
}

/// Waits for `child` (at most `timeout`) and returns whether it succeeded and its stderr, read
/// on a thread meanwhile so that a full pipe never blocks it.
fn output_of(mut child: Child, timeout: Duration) -> (bool, String) {
    let reader = child.0.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the example") {
            break status;
        }
        assert!(
            start.elapsed() < timeout,
            "the example did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    (status.success(), stderr)
}

#[test]
fn ebpf_to_pyroscope_pushes_into_receive_enrich_write() {
    if !pyro_testkit::bpf_available() {
        return;
    }
    let Some(yes) = pyro_testkit::tool("yes") else {
        return;
    };
    let (ebpf_example, receive_example) = (
        example("ebpf_to_pyroscope"),
        example("receive_enrich_write"),
    );
    let dir = tempfile::tempdir().unwrap();
    // A busy process with a name of its own (its service_name after the relabel rule).
    let busy = dir.path().join("pyro_cli_busy");
    std::fs::copy(&yes, &busy).unwrap();
    let _workload = Child(
        pyro_testkit::spawn(Command::new(&busy).stdout(Stdio::null())).expect("start the workload"),
    );

    // A free port for the receiving example.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = dir.path().join("profiles");
    let receiver = Child(
        Command::new(&receive_example)
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start receive_enrich_write"),
    );
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "receive_enrich_write does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let pusher = Child(
        Command::new(&ebpf_example)
            .args(["--url", &format!("http://127.0.0.1:{port}")])
            .args([
                "--duration",
                "4s",
                "--collect-interval",
                "2s",
                "--refresh",
                "1s",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ebpf_to_pyroscope"),
    );
    let (ok, log) = output_of(pusher, Duration::from_secs(60));
    assert!(ok, "ebpf_to_pyroscope failed:\n{log}");
    assert!(log.contains("pushing:"), "no progress line:\n{log}");
    assert!(log.contains("done:"), "no final line:\n{log}");

    // Ctrl-C stops the receiving example cleanly.
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child's.
    let rc = unsafe { libc::kill(receiver.0.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "send SIGINT");
    let (ok, log) = output_of(receiver, Duration::from_secs(30));
    assert!(ok, "receive_enrich_write failed:\n{log}");
    assert!(log.contains("interrupted after"), "{log}");
    assert!(log.contains("done:"), "{log}");

    // The busy process's profiles, as pprof files a reader can decode, with flame graphs.
    let files: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("the output directory")
        .map(|e| e.unwrap().path())
        .collect();
    let busy_pprofs: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("pyro_cli_busy.process_cpu.") && name.ends_with(".pb.gz")
        })
        .collect();
    assert!(
        !busy_pprofs.is_empty(),
        "no profile of pyro_cli_busy in {files:?}\nreceiver log:\n{log}"
    );
    for pprof_path in &busy_pprofs {
        let raw = std::fs::read(pprof_path).unwrap();
        let p = pprof::decode(&raw, DEFAULT_MAX_DECODED_SIZE).expect("the file decodes");
        let stacks = pprof::folded(&p, p.default_sample_index());
        assert!(
            !stacks.is_empty(),
            "{} has no samples",
            pprof_path.display()
        );
        assert!(
            stacks
                .iter()
                .all(|s| s.frames.first().map(String::as_str) == Some("pyro_cli_busy")),
            "{}: {stacks:?}",
            pprof_path.display()
        );
        let svg = pprof_path.with_extension("").with_extension("svg");
        assert!(svg.is_file(), "no flame graph {}", svg.display());
    }
}
