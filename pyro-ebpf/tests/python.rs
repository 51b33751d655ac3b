//! Python frames (`python_enabled`): a CPython workload whose CPU time splits 1 : 2 : 3 by
//! construction between three functions in long phases (`tests/python/work.py`, 12 s) is
//! profiled by two collectors at once, one reading Python frames and one not, while `py-spy`
//! records it too.
//!
//! Checked on Debian's `python3.11`, the pyenv 3.11 build, and Debian sid's `python3.13`,
//! `python3.14` and `python3.15`, each run as `chroot ROOT python3.X` in the root
//! `.ci/python-roots.sh` builds (an ordinary process of this host with its own files, as in a
//! container): each function's share within ±5 points of 1/6, 2/6, 3/6; the full Python call
//! path from `<module>` to the leaf; the class method class-qualified (`work.py
//! Worker.work_b`); the function of `other.py` named with that file; py-spy's top three
//! functions the same, in the same order; and with `python_enabled = false` no Python frame at
//! all. On 3.13–3.15 a program with two threads (`tests/python/threads.py`), one hashing without
//! the GIL, one spinning with it, has each thread's samples on its own call path.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pyro_core::pprof::FoldedStack;
use pyro_ebpf::{Collector, EbpfConfig, EbpfMetrics};
use pyro_testkit::measure::bpf_run_time;

/// The three functions, their legacy frame names and their shares by construction.
const FUNCTIONS: [(&str, &str, f64); 3] = [
    ("work_a", "work.py work_a", 1.0 / 6.0),
    ("work_b", "work.py Worker.work_b", 2.0 / 6.0),
    ("work_c", "other.py work_c", 3.0 / 6.0),
];

/// Seconds the workload runs.
const SECONDS: &str = "12";

/// Milliseconds of one unit of work: `work_a`'s phase (`work_b`'s is twice, `work_c`'s three
/// times as long), many periods of any sampling frequency used here.
const PHASE_MS: &str = "100";

/// A CPython to run the workloads with: on this host, or in a root directory (`chroot`).
#[derive(Debug, Clone)]
struct Py {
    label: String,
    /// The executable (inside `root` when there is one).
    exe: PathBuf,
    root: Option<PathBuf>,
}

impl Py {
    fn host(exe: PathBuf, label: &str) -> Self {
        Py {
            label: label.to_string(),
            exe,
            root: None,
        }
    }

    /// A command running `tests/python/<script>`; for a root, the directory is copied into it
    /// first (`/tmp/pyro-ebpf-tests-PID/`) and the command is `chroot ROOT EXE SCRIPT`.
    fn command(&self, script: &str) -> Command {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
        let Some(root) = &self.root else {
            let mut cmd = Command::new(&self.exe);
            cmd.arg(dir.join(script));
            return cmd;
        };
        let inside = PathBuf::from(format!("/tmp/pyro-ebpf-tests-{}", std::process::id()));
        let dst = root.join(inside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&dst).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
            }
        }
        let mut cmd = Command::new("chroot");
        cmd.arg(root).arg(&self.exe).arg(inside.join(script));
        cmd
    }
}

/// Where `.ci/python-roots.sh` builds the Debian sid root with CPython 3.13–3.15
/// (`PYRO_PYTHON_ROOT`, else `/tmp/pyro-python-roots/sid`).
fn sid_root() -> PathBuf {
    std::env::var_os("PYRO_PYTHON_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/pyro-python-roots/sid"))
}

/// `python3.minor` of the sid root; a skip when missing, a failure under `PYRO_REQUIRE_TOOLS=1`.
fn sid(minor: u8) -> Option<Py> {
    let root = sid_root();
    let exe = PathBuf::from(format!("/usr/bin/python3.{minor}"));
    python(
        root.join(exe.strip_prefix("/").unwrap()),
        ".ci/python-roots.sh builds the sid root",
    )?;
    Some(Py {
        label: format!("sid-3.{minor}"),
        exe,
        root: Some(root),
    })
}

fn required() -> bool {
    std::env::var("PYRO_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// `path` if it exists; a skip (or a failure under `PYRO_REQUIRE_TOOLS=1`) otherwise.
fn python(path: PathBuf, how: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        !required(),
        "{} is missing ({how}) and PYRO_REQUIRE_TOOLS=1",
        path.display()
    );
    eprintln!("SKIPPED: {} is missing ({how})", path.display());
    None
}

/// The newest pyenv 3.11 build (`$PYENV_ROOT`, else `~/.pyenv`).
fn pyenv_311() -> Option<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv")
        });
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root.join("versions"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let patch = name.strip_prefix("3.11.")?.parse().ok()?;
                    Some((patch, e.path().join("bin/python3.11")))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let exe = found
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| root.join("versions/3.11.x/bin/python3.11"));
    python(exe, "the pyenv 3.11 build")
}

/// Which of the three functions a stack of legacy frame names runs (the leaf-most one).
fn function_of<'a>(
    frames: impl DoubleEndedIterator<Item = &'a str>,
    by: impl Fn(&str) -> Option<usize>,
) -> Option<usize> {
    frames.rev().find_map(by)
}

/// Shares of the three functions in folded stacks.
fn shares(stacks: &[(Vec<String>, i64)], by: impl Fn(&str) -> Option<usize> + Copy) -> [f64; 3] {
    let total: i64 = stacks.iter().map(|(_, v)| v).sum();
    let mut per = [0i64; 3];
    for (frames, value) in stacks {
        if let Some(i) = function_of(frames.iter().map(String::as_str), by) {
            per[i] += value;
        }
    }
    per.map(|v| v as f64 / total.max(1) as f64)
}

/// Indices of the functions, largest share first.
fn order(shares: [f64; 3]) -> Vec<usize> {
    let mut idx = vec![0, 1, 2];
    idx.sort_by(|a, b| shares[*b].total_cmp(&shares[*a]));
    idx
}

/// py-spy's raw output (`frame;frame;… count`, frames `function (file:line)`), root first.
fn parse_py_spy(raw: &str) -> Vec<(Vec<String>, i64)> {
    raw.lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            Some((
                stack.split(';').map(str::to_owned).collect(),
                count.parse().ok()?,
            ))
        })
        .collect()
}

/// py-spy frame → function index (`work_a (work.py:21)`, `work_b (work.py:28)` …).
fn py_spy_function(frame: &str) -> Option<usize> {
    let name = frame.split(" (").next()?;
    let name = name.rsplit('.').next()?;
    FUNCTIONS.iter().position(|(f, _, _)| *f == name)
}

fn legacy_function(frame: &str) -> Option<usize> {
    FUNCTIONS.iter().position(|(_, legacy, _)| *legacy == frame)
}

fn folded(stacks: Vec<FoldedStack>) -> Vec<(Vec<String>, i64)> {
    stacks.into_iter().map(|s| (s.frames, s.value)).collect()
}

fn check(py: &Py, py_spy: Option<&Path>) {
    let label = py.label.as_str();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = py.command("work.py");
    cmd.arg(SECONDS).arg(PHASE_MS);
    let mut workload = Workload::spawn_cmd(&mut cmd);
    let pid = workload.pid();
    let target = vec![pid_target(pid, "python")];
    // 199 Hz: twice the default samples, so the ±5 points hold with margin on a busy machine.
    let mut with = collector(
        EbpfConfig {
            sample_rate: 199,
            ..EbpfConfig::default()
        },
        target.clone(),
    );
    let mut without = collector(
        EbpfConfig {
            python_enabled: false,
            ..EbpfConfig::default()
        },
        target,
    );
    workload.go();
    let spy_out = dir.path().join("py-spy.txt");
    let spy = py_spy.map(|bin| {
        Command::new(bin)
            .args([
                "record",
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                "97",
                "--duration",
                "10",
                "--pid",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&spy_out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    });
    let start = Instant::now();
    while !workload.exited() && start.elapsed() < Duration::from_secs(60) {
        with.poll();
        without.poll();
        std::thread::sleep(Duration::from_millis(100));
    }
    let profiles = with.collect();
    let plain = without.collect();
    workload.wait();

    let ours = folded(stacks(
        profile_of(&profiles, pid).expect("a profile with Python frames"),
    ));
    let comm = ours[0].0[0].clone();
    assert!(comm.starts_with("python3"), "{label}: root {comm}");
    // Values are CPU nanoseconds: at least 2 s of the 8 s (the machine is shared).
    let total: i64 = ours.iter().map(|(_, v)| v).sum();
    assert!(total >= 2_000_000_000, "{label}: only {total} ns of CPU");
    let got = shares(&ours, legacy_function);
    eprintln!(
        "{label}: {:.2} s of CPU, shares {got:?}",
        total as f64 / 1e9
    );
    for (i, (_, name, want)) in FUNCTIONS.iter().enumerate() {
        assert!(
            (got[i] - want).abs() <= 0.05,
            "{label}: {name} has {:.1} % of the samples, expected {:.1} % ± 5: {ours:#?}",
            got[i] * 100.0,
            want * 100.0
        );
        // The Python call path from the module level to the leaf, under the process name.
        let path = [comm.as_str(), "work.py <module>", "work.py run", name];
        assert!(
            ours.iter()
                .any(|(frames, _)| frames.len() >= 4 && frames[..4] == path),
            "{label}: no stack {path:?}"
        );
    }
    // Python frames replace the interpreter's native frames.
    let mixed: Vec<_> = ours
        .iter()
        .filter(|(f, _)| {
            f.iter().any(|n| n.contains(".py "))
                && f.iter().any(|n| n.contains("_PyEval_EvalFrameDefault"))
        })
        .collect();
    assert!(
        mixed.is_empty(),
        "{label}: native interpreter frames next to Python frames: {mixed:#?}"
    );
    let native_only: i64 = ours
        .iter()
        .filter(|(f, _)| !f.iter().any(|n| n.contains(".py ")))
        .map(|(_, v)| v)
        .sum();
    eprintln!(
        "{label}: {:.1} % of the CPU time without Python frames",
        100.0 * native_only as f64 / total as f64
    );
    assert!(
        native_only * 20 < total,
        "{label}: {native_only} of {total} ns without Python frames: {ours:#?}"
    );

    // python_enabled = false: native frames only, from the same process at the same time.
    let native = folded(stacks(profile_of(&plain, pid).expect("a native profile")));
    let native_total: i64 = native.iter().map(|(_, v)| v).sum();
    assert!(
        native_total >= 2_000_000_000,
        "{label}: only {native_total} ns of native CPU"
    );
    assert!(
        !native
            .iter()
            .any(|(f, _)| f.iter().any(|n| n.contains(".py "))),
        "{label}: Python frames with python_enabled = false"
    );
    assert!(
        native.iter().any(|(f, _)| f.len() > 2),
        "{label}: no native stack deeper than two frames"
    );

    if let Some(spy) = spy {
        let out = spy.wait_with_output().unwrap();
        let raw = std::fs::read_to_string(&spy_out).unwrap_or_default();
        assert!(
            !raw.is_empty(),
            "{label}: py-spy wrote nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = shares(&parse_py_spy(&raw), py_spy_function);
        eprintln!("{label}: py-spy shares {theirs:?}");
        assert_eq!(
            order(theirs),
            order(got),
            "{label}: py-spy {theirs:?}, pyro {got:?}"
        );
        assert_eq!(order(got), vec![2, 1, 0]);
    }
}

#[test]
fn python_frames_split_as_constructed_and_agree_with_py_spy() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let py_spy = pyro_testkit::tool("py-spy");
    let mut pythons = Vec::new();
    if let Some(exe) = python(
        PathBuf::from("/usr/bin/python3.11"),
        "apt-get install python3.11",
    ) {
        pythons.push(Py::host(exe, "debian-3.11"));
    }
    if let Some(exe) = pyenv_311() {
        pythons.push(Py::host(exe, "pyenv-3.11"));
    }
    pythons.extend([13, 14, 15].into_iter().filter_map(sid));
    // Other minors where pyenv has them (this dev machine; not CI).
    for minor in [8, 9, 10, 12, 13] {
        match pyenv_optional(minor) {
            Some(exe) => pythons.push(Py::host(exe, &format!("pyenv-3.{minor}"))),
            None => eprintln!("UNCHECKED: no pyenv 3.{minor} build"),
        }
    }
    for py in &pythons {
        check(py, py_spy.as_deref());
    }
}

/// The newest pyenv build of `3.minor` when present (not required: CI machines only have 3.11).
fn pyenv_optional(minor: u8) -> Option<PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv")
        });
    let prefix = format!("3.{minor}.");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root.join("versions"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let patch = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((patch, e.path().join(format!("bin/python3.{minor}"))))
        })
        .filter(|(_, p)| p.exists())
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// The run loop with a registry: a supported CPython is counted in
/// `pyroscope_ebpf_python_processes_total` and shows Python frames; an unsupported one in
/// `pyroscope_ebpf_python_unsupported_total` (once), with native frames only. The unsupported
/// one is pyenv's 3.7 where present, else a stand-in for a CPython newer than the table: sid's
/// `python3.15` executable copied as `python3.16` into the root (what pyro meets the week a new
/// minor ships: a `python3.16` it has no row for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the guard only serializes this binary's tests; no task here takes it again"
)]
async fn python_metrics_and_unsupported_versions() {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;
    use pyro_core::DynReceiver;

    let _serial = serial();
    if !bpf() {
        return;
    }
    let Some(exe) = python(
        PathBuf::from("/usr/bin/python3.11"),
        "apt-get install python3.11",
    ) else {
        return;
    };
    let old = pyenv_optional(7)
        .map(|exe| Py::host(exe, "pyenv-3.7"))
        .or_else(|| {
            let sid = sid(15)?;
            let root = sid.root.clone()?;
            let newer = PathBuf::from("/usr/local/bin/python3.16");
            std::fs::copy(
                root.join(sid.exe.strip_prefix("/").unwrap()),
                root.join(newer.strip_prefix("/").unwrap()),
            )
            .unwrap();
            Some(Py {
                label: "sid-3.16-stand-in".into(),
                exe: newer,
                root: Some(root),
            })
        });
    if old.is_none() {
        eprintln!(
            "UNCHECKED: no pyenv 3.7 nor sid root: the unsupported-version path is not exercised"
        );
    }
    let mut supported =
        Workload::spawn_cmd(Py::host(exe, "debian-3.11").command("work.py").arg("3"));
    let mut unsupported = old
        .as_ref()
        .map(|old| Workload::spawn_cmd(old.command("work.py").arg("3")));
    let mut targets = vec![pid_target(supported.pid(), "py311")];
    if let Some(w) = &unsupported {
        targets.push(pid_target(w.pid(), "py-unsupported"));
    }
    let recorder = Arc::new(Recorder::default());
    let mut registry = Registry::default();
    let (handle, run) = Collector::builder(EbpfConfig {
        collect_interval: Duration::from_secs(2),
        ..EbpfConfig::default()
    })
    .targets(targets)
    .forward_to([recorder.clone() as DynReceiver])
    .with_metrics(EbpfMetrics::register(&mut registry))
    .build()
    .unwrap();
    let task = tokio::spawn(run);
    supported.go();
    if let Some(w) = unsupported.as_mut() {
        w.go();
    }
    let (supported_pid, unsupported_pid) =
        (supported.pid(), unsupported.as_ref().map(Workload::pid));
    tokio::task::spawn_blocking(move || {
        supported.wait();
        if let Some(w) = unsupported {
            w.wait();
        }
    })
    .await
    .unwrap();
    drop(handle);
    task.await.unwrap();

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("pyroscope_ebpf_python_processes_total 1\n"),
        "{text}"
    );
    let want_unsupported = u32::from(unsupported_pid.is_some());
    assert!(
        text.contains(&format!(
            "pyroscope_ebpf_python_unsupported_total {want_unsupported}\n"
        )),
        "{text}"
    );
    let profiles = recorder.take();
    let frames_of = |pid: u32| -> Vec<String> {
        let pid_s = pid.to_string();
        profiles
            .iter()
            .filter(|p| p.labels.get("__process_pid__") == Some(pid_s.as_str()))
            .flat_map(|p| stacks(p).into_iter().flat_map(|s| s.frames))
            .collect()
    };
    let py = frames_of(supported_pid);
    assert!(py.iter().any(|f| f == "other.py work_c"), "{py:?}");
    if let Some(pid) = unsupported_pid {
        let native = frames_of(pid);
        assert!(!native.is_empty(), "no profile of the unsupported process");
        assert!(!native.iter().any(|f| f.contains(".py ")), "{native:?}");
    }
}

/// 3.13–3.15: two threads on their own call paths (`threads.py`): the hasher, on the CPU without
/// the GIL while it hashes, and the spinner, holding the GIL. Every sample's Python frames are
/// those of its own thread (no stack mixes the two paths), and each thread has its part of the
/// CPU time: a walker that took the GIL holder's (or the interpreter's current) thread state
/// would put the spinner's frames on the hasher's samples.
#[test]
fn python_threads_have_their_own_stacks() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    for py in [13, 14, 15].into_iter().filter_map(sid) {
        let label = py.label.as_str();
        let mut workload = Workload::spawn_cmd(py.command("threads.py").arg("6"));
        let pid = workload.pid();
        let mut c = collector(
            EbpfConfig {
                sample_rate: 199,
                ..EbpfConfig::default()
            },
            vec![pid_target(pid, "threads")],
        );
        workload.go();
        let start = Instant::now();
        while !workload.exited() && start.elapsed() < Duration::from_secs(60) {
            c.poll();
            std::thread::sleep(Duration::from_millis(100));
        }
        let profiles = c.collect();
        workload.wait();
        let ours = folded(stacks(profile_of(&profiles, pid).expect("a profile")));
        let total: i64 = ours.iter().map(|(_, v)| v).sum();
        let on = |frames: &[String], name: &str| frames.iter().any(|f| f == name);
        let (mut hash, mut spin) = (0i64, 0i64);
        for (frames, value) in &ours {
            let h = on(frames, "threads.py hash_leaf") || on(frames, "threads.py hash_outer");
            let s = on(frames, "threads.py spin_leaf") || on(frames, "threads.py spin_outer");
            assert!(
                !(h && s),
                "{label}: one stack holds both threads' frames: {frames:?}"
            );
            if on(frames, "threads.py hash_leaf") {
                assert!(on(frames, "threads.py hash_outer"), "{label}: {frames:?}");
                hash += value;
            }
            if on(frames, "threads.py spin_leaf") {
                assert!(on(frames, "threads.py spin_outer"), "{label}: {frames:?}");
                spin += value;
            }
        }
        let (hs, ss) = (
            hash as f64 / total.max(1) as f64,
            spin as f64 / total.max(1) as f64,
        );
        eprintln!(
            "{label}: {:.2} s of CPU, hasher {:.1} %, spinner {:.1} %",
            total as f64 / 1e9,
            hs * 100.0,
            ss * 100.0
        );
        assert!(total >= 2_000_000_000, "{label}: only {total} ns of CPU");
        assert!(
            hs >= 0.3 && ss >= 0.3 && hs + ss >= 0.9,
            "{label}: hasher {hs:.3}, spinner {ss:.3} of the samples: {ours:#?}"
        );
    }
}

/// The in-kernel cost of the Python walker per version (`BENCHMARKS.md`, "Python walker in the
/// kernel per CPython version"): `work.py` (one busy thread, 4 Python frames) profiled at 97 Hz
/// for 10 s with `python_enabled` off, on, off, on; per run the program's `run_time_ns` and
/// `run_cnt` (`kernel.bpf_stats_enabled=1`) and the kernel's own counters of native and Python
/// samples. A figure, not an assertion: run with `--ignored --nocapture` as root.
#[test]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
fn python_walker_kernel_cost() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats).unwrap_or_default();
    std::fs::write(stats, "1").expect("enable kernel.bpf_stats_enabled");
    let mut pythons: Vec<Py> = python(
        PathBuf::from("/usr/bin/python3.11"),
        "apt-get install python3.11",
    )
    .map(|exe| Py::host(exe, "debian-3.11"))
    .into_iter()
    .collect();
    pythons.extend([13, 14, 15].into_iter().filter_map(sid));
    for py in &pythons {
        for enabled in [false, true, false, true] {
            let mut workload = Workload::spawn_cmd(py.command("work.py").arg("10").arg(PHASE_MS));
            let pid = workload.pid();
            let mut c = collector(
                EbpfConfig {
                    python_enabled: enabled,
                    ..EbpfConfig::default()
                },
                vec![pid_target(pid, "python")],
            );
            let k0 = c.kernel_counters();
            let (ns0, cnt0) = bpf_run_time();
            workload.go();
            while !workload.exited() {
                c.poll();
                std::thread::sleep(Duration::from_millis(200));
            }
            let (ns1, cnt1) = bpf_run_time();
            let k1 = c.kernel_counters();
            c.collect();
            workload.wait();
            let (ns, runs) = (ns1 - ns0, (cnt1 - cnt0).max(1));
            let py_samples = k1.python_samples - k0.python_samples;
            let sent = k1.sent - k0.sent;
            eprintln!(
                "BENCH {} python_enabled={enabled}: {runs} runs, {sent} samples sent ({py_samples} with a Python walk), {:.1} ms in the program, {:.0} ns/run",
                py.label,
                ns as f64 / 1e6,
                ns as f64 / runs as f64
            );
        }
    }
    let _ = std::fs::write(stats, before.trim());
}
