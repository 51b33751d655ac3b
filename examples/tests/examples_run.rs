//! The example programs run as their doc comments say, tried as a new user would:
//! `--help` prints usage and does nothing else, a mistyped flag or a bad value is an error
//! naming it, without root the error names the privileges needed, log lines are coloured only
//! on a terminal, `profile_host` writes the processes' labels into its files, and
//! `ebpf_to_pyroscope --url` pushes into `receive_enrich_write --out`, which writes the profiles
//! of a busy process into a directory, and both stop cleanly (one at the end of `--duration`,
//! the other on Ctrl-C).
//!
//! The binaries are the ones `cargo test` builds next to this test (`target/<profile>/examples/`);
//! the profiling runs need root (eBPF), the unprivileged run `setpriv` (util-linux) when the
//! test runs as root and `script` (bsdutils) for a terminal.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
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

/// What a finished example printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The exit code (128 + n for a signal).
    fn code(&self) -> i32 {
        self.status
            .code()
            .or_else(|| self.status.signal().map(|s| 128 + s))
            .unwrap_or(-1)
    }
}

/// Waits for `child` (at most `timeout`) and returns its exit status and output, read on
/// threads meanwhile so that a full pipe never blocks it.
fn wait(mut child: Child, timeout: Duration) -> Run {
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut p| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = p.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        })
    };
    let stdout = read(
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the example") {
            break status;
        }
        assert!(
            start.elapsed() < timeout,
            "the example did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |r: Option<std::thread::JoinHandle<String>>| {
        r.map(|r| r.join().unwrap_or_default()).unwrap_or_default()
    };
    Run {
        status,
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

/// Runs `command` with piped output; `RUST_LOG` and `NO_COLOR` come from `command`, not from
/// the test's own environment.
fn run(command: &mut Command, timeout: Duration) -> Run {
    for var in ["RUST_LOG", "NO_COLOR"] {
        if !command.get_envs().any(|(k, _)| k == var) {
            command.env_remove(var);
        }
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    wait(Child(child), timeout)
}

/// Waits for `child` (at most `timeout`) and returns whether it succeeded and its stderr.
fn output_of(child: Child, timeout: Duration) -> (bool, String) {
    let run = wait(child, timeout);
    (run.status.success(), run.stderr)
}

/// The arguments each example needs besides the one under test.
const EXAMPLES: [(&str, &[&str]); 3] = [
    ("profile_host", &[]),
    ("ebpf_to_pyroscope", &["--url", "http://127.0.0.1:9"]),
    (
        "receive_enrich_write",
        &["--out", "profiles", "--port", "0"],
    ),
];

#[test]
fn help_prints_usage_and_does_nothing_else() {
    for (name, _) in EXAMPLES {
        let cwd = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let r = run(
            Command::new(example(name))
                .arg("--help")
                .current_dir(cwd.path()),
            Duration::from_secs(30),
        );
        assert_eq!(r.code(), 0, "{name} --help:\n{}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.contains(&format!("Usage: {name} ")),
            "{name}:\n{}",
            r.stdout
        );
        for flag in ["--duration", "--help"] {
            assert!(
                r.stdout.contains(flag),
                "{name} --help lacks {flag}:\n{}",
                r.stdout
            );
        }
        assert!(r.stderr.is_empty(), "{name} --help logged:\n{}", r.stderr);
        // No profiling run (profile_host's default is 15 s) and nothing written.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} --help took {:?}",
            start.elapsed()
        );
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
        assert!(left.is_empty(), "{name} --help wrote {left:?}");
    }
}

#[test]
fn unknown_flags_and_bad_values_are_errors_naming_them() {
    for (name, required) in EXAMPLES {
        let cwd = tempfile::tempdir().unwrap();
        for (args, named) in [
            (&["--durtion", "30s"][..], &["--durtion", "--duration"][..]),
            (&["--duration", "soon"][..], &["--duration", "soon"][..]),
        ] {
            let r = run(
                Command::new(example(name))
                    .args(required)
                    .args(args)
                    .current_dir(cwd.path()),
                Duration::from_secs(30),
            );
            assert_eq!(r.code(), 2, "{name} {args:?}:\n{}", r.stderr);
            for n in named {
                assert!(
                    r.stderr.contains(n),
                    "{name} {args:?} does not name {n}:\n{}",
                    r.stderr
                );
            }
            assert!(
                !r.stderr.contains('\x1b'),
                "colour in a pipe:\n{}",
                r.stderr
            );
        }
        let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
        assert!(left.is_empty(), "{name} wrote {left:?}");
    }
}

/// A copy of example `name` in a directory every user can read (the target directory may be
/// under a home only root can enter).
fn public_copy(name: &str, dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(name);
    std::fs::copy(example(name), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// `profile_host` as an unprivileged user: `nobody` through `setpriv` when the test runs as
/// root, this user otherwise.
fn unprivileged(exe: &Path, out: &Path) -> Option<Command> {
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let setpriv = pyro_testkit::tool("setpriv")?;
        let mut c = Command::new(setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    command
        .arg("--out")
        .arg(out)
        .args(["--duration", "1s"])
        .current_dir(out.parent()?);
    Some(command)
}

#[test]
fn without_privileges_the_error_names_them_and_colour_is_for_terminals_only() {
    let Some(script) = pyro_testkit::tool("script") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = public_copy("profile_host", dir.path());
    let out = dir.path().join("profiles");
    let Some(mut command) = unprivileged(&exe, &out) else {
        return;
    };

    // Piped: the message, with Display, not a Debug dump of the kernel error; no escape codes.
    let r = run(&mut command, Duration::from_secs(60));
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let expected = "error: loading the eBPF profiler needs root or CAP_BPF + CAP_PERFMON (and \
                    CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE to read other processes): ";
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{}", r.stderr));
    assert!(line.starts_with(expected), "{}", r.stderr);
    assert!(
        line.ends_with("Operation not permitted (os error 1)")
            || line.ends_with("Permission denied (os error 13)"),
        "{line}"
    );
    for debug in ["MapError(", "CreateError {", "Os {", "kind: "] {
        assert!(!r.stderr.contains(debug), "a Debug dump:\n{}", r.stderr);
    }
    assert!(
        r.stderr.contains(" WARN "),
        "no log line to check for colour:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains('\x1b'),
        "colour in a pipe:\n{:?}",
        r.stderr
    );
    assert!(!out.exists(), "profiles written without profiling");

    // On a terminal (`script` gives it one): coloured, unless NO_COLOR is set.
    let on_terminal = |no_color: Option<&str>| {
        let shell_line = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut c = Command::new(&script);
        c.args(["--quiet", "--return", "--command", &shell_line, "/dev/null"]);
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let r = run(&mut c, Duration::from_secs(60));
        assert!(r.stdout.contains("needs root"), "{}{}", r.stdout, r.stderr);
        r.stdout
    };
    let coloured = on_terminal(None);
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal:\n{coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR:\n{plain:?}"
    );
}

/// `profile_host`'s files carry the labels of the process's target (`service_name` from the
/// relabel rule, `__process_pid__`), readable with `go tool pprof -tags`, also for a process
/// whose binary was deleted after it started.
#[test]
fn profile_host_writes_the_labels_of_each_process() {
    if !pyro_testkit::bpf_available() {
        return;
    }
    let Some(yes) = pyro_testkit::tool("yes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let busy = dir.path().join("pyro_labels_busy");
    std::fs::copy(&yes, &busy).unwrap();
    let workload = Child(
        pyro_testkit::spawn(Command::new(&busy).stdout(Stdio::null())).expect("start the workload"),
    );
    let pid = workload.0.id();
    let start = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .as_deref()
        != Some(busy.as_path())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the workload did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Replaced binaries are named after the binary, not `pyro_labels_busy (deleted)`.
    std::fs::remove_file(&busy).unwrap();

    let out = dir.path().join("profiles");
    let r = run(
        Command::new(example("profile_host"))
            .arg("--out")
            .arg(&out)
            .args(["--duration", "3s"])
            .env("RUST_LOG", "debug"),
        Duration::from_secs(120),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    // Log lines, piped: no escape codes.
    assert!(r.stderr.contains(" DEBUG "), "no log lines:\n{}", r.stderr);
    assert!(!r.stderr.contains('\x1b'), "colour in a pipe");
    let pprofs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("pyro_labels_busy.process_cpu.") && name.ends_with(".pb.gz")
        })
        .collect();
    assert_eq!(
        pprofs.len(),
        1,
        "{:?}\n{}",
        std::fs::read_dir(&out).unwrap().collect::<Vec<_>>(),
        r.stderr
    );
    let raw = std::fs::read(&pprofs[0]).unwrap();
    let p = pprof::decode(&raw, DEFAULT_MAX_DECODED_SIZE).unwrap();
    let pid_text = pid.to_string();
    assert!(!p.sample.is_empty());
    for s in &p.sample {
        let labels: Vec<(&str, &str)> = s
            .label
            .iter()
            .map(|l| (p.string(l.key), p.string(l.str)))
            .collect();
        assert!(
            labels.contains(&("service_name", "pyro_labels_busy")),
            "{labels:?}"
        );
        assert!(
            labels.contains(&("__process_pid__", pid_text.as_str())),
            "{labels:?}"
        );
    }
    if let Some(tags) = pyro_testkit::go_pprof(&["-tags"], &pprofs[0]) {
        assert!(
            tags.contains("service_name:") && tags.contains("pyro_labels_busy"),
            "{tags}"
        );
        assert!(
            tags.contains("__process_pid__:") && tags.contains(&pid_text),
            "{tags}"
        );
    }
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
