//! The reference walker on live CPython processes (Debian's python3.11 and pyenv builds),
//! checked against the call paths the workload builds and against `py-spy dump`.
//! Reading another process's memory needs root (or ptrace rights over it).

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use pyro_python::{PyFrame, ReferenceWalker, ThreadStack};
use support::Python;

/// A workload process, killed on drop.
struct Workload(Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/workload/main.py")
}

/// Starts `main.py mode` and waits until `ready` lines came from every thread.
fn start(py: &Python, mode: &str, ready: usize) -> Workload {
    let mut child = py
        .command(&script())
        .arg(mode)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: spawn {}: {e}", py.label, py.exe.display()));
    let stdout = child.stdout.take().expect("stdout");
    let w = Workload(child);
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..ready {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{}: workload exited early", py.label))
            .expect("read workload stdout");
        assert!(line.starts_with("ready"), "{}: {line}", py.label);
    }
    w
}

fn can_read_memory() -> bool {
    pyro_testkit::bpf_available()
}

fn names(t: &ThreadStack) -> Vec<String> {
    t.stack.frames.iter().map(PyFrame::legacy_name).collect()
}

fn walker(py: &Python, pid: u32) -> ReferenceWalker {
    let w = ReferenceWalker::new(pid)
        .unwrap_or_else(|e| panic!("{}: detect: {e}", py.label))
        .unwrap_or_else(|| panic!("{}: pid {pid} not detected as CPython", py.label));
    let p = w.process();
    assert_eq!(
        (p.version.major, p.version.minor),
        (3, py.minor),
        "{}",
        py.label
    );
    assert!(p.version.patch.is_some(), "{}: no patch level", py.label);
    eprintln!(
        "{}: CPython {} in {} (bias {:#x}), key {:?}, key 0 data at tp+{:#x}, TLS at tp{:+}",
        py.label,
        p.version,
        p.module.path.display(),
        p.bias,
        p.tss_key,
        p.config.tls_key0_data,
        p.config.tstate_tls_offset as i64
    );
    assert_eq!(
        p.module.path.canonicalize().ok(),
        py.interpreter.canonicalize().ok(),
        "{}: interpreter file",
        py.label
    );
    w
}

/// Each thread's stack, leaf first, as the workload builds it (`idle`: sleeping in `block`;
/// `spin`: running in `block`).
fn check_threads(py: &Python, mode: &str) {
    let w = start(py, mode, 3);
    let pid = w.0.id();
    let walker = walker(py, pid);
    let threads = walker
        .stacks()
        .unwrap_or_else(|e| panic!("{}: walk: {e}", py.label));
    assert_eq!(threads.len(), 3, "{}: {threads:#?}", py.label);
    for t in &threads {
        // The pthread-key path (what BPF uses) finds every thread's own state.
        assert_eq!(
            t.tls_tstate,
            Some(t.tstate),
            "{}: thread {:#x}",
            py.label,
            t.thread_id
        );
        assert_eq!(t.stack.errors, 0, "{}: {:?}", py.label, names(t));
        assert!(!t.stack.truncated);
        if let Some(tid) = t.native_thread_id {
            assert!(
                std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists(),
                "{}: native thread id {tid} is not a thread of {pid}",
                py.label
            );
        }
    }
    let all: Vec<Vec<String>> = threads.iter().map(names).collect();
    let main = [
        "main.py block",
        "main.py Shape.area",
        "main.py middle",
        "main.py outer",
        "main.py <module>",
    ];
    assert!(
        all.iter().any(|s| s == &main),
        "{}: no main thread stack {main:?} in {all:#?}",
        py.label
    );
    let threading_tail = |s: &[String]| {
        !s.is_empty()
            && s.iter().all(|f| f.starts_with("threading.py Thread."))
            && s.last()
                .is_some_and(|f| f == "threading.py Thread._bootstrap")
    };
    assert!(
        all.iter().any(|s| s.len() > 2
            && s[..2] == ["main.py block", "main.py Shape.make"]
            && threading_tail(&s[2..])),
        "{}: no classmethod thread in {all:#?}",
        py.label
    );
    assert!(
        all.iter().any(|s| s.len() > 2
            && s[..2] == ["main.py block", "helper.py in_other_file"]
            && threading_tail(&s[2..])),
        "{}: no thread in helper.py in {all:#?}",
        py.label
    );
    // Full file names are kept (up to the last MAX_FILE_BYTES bytes).
    let PyFrame::Symbol(s) = &threads[0].stack.frames[0] else {
        panic!("unknown frame")
    };
    assert!(
        s.file.ends_with("/tests/workload/main.py"),
        "{}: {}",
        py.label,
        s.file
    );

    if let Some(pyspy) = pyro_testkit::tool("py-spy") {
        let out = Command::new(pyspy)
            .args(["dump", "--pid", &pid.to_string()])
            .output()
            .expect("run py-spy");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: py-spy: {}",
            py.label,
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = parse_pyspy(&text);
        assert_eq!(
            theirs.len(),
            threads.len(),
            "{}: py-spy threads:\n{text}",
            py.label
        );
        for t in &threads {
            let ours: Vec<(String, String)> = t
                .stack
                .frames
                .iter()
                .map(|f| match f {
                    // py-spy shows co_qualname where the version has it, else co_name.
                    PyFrame::Symbol(s) => (
                        s.qualname.clone().unwrap_or_else(|| s.name.clone()),
                        s.file_base_name().to_string(),
                    ),
                    PyFrame::Unknown => ("?".into(), "?".into()),
                })
                .collect();
            assert!(
                theirs.contains(&ours),
                "{}: our stack {ours:?} is not in py-spy's:\n{text}",
                py.label
            );
        }
        eprintln!(
            "{}: py-spy agrees on {} threads ({mode})",
            py.label,
            threads.len()
        );
    }
}

/// The thread pointer BPF will use (`task->thread.fsbase`, read here by bpftrace) leads through
/// the pthread key to each thread's own `PyThreadState`.
fn check_fsbase(py: &Python) {
    let w = start(py, "spin", 3);
    let pid = w.0.id();
    let walker = walker(py, pid);
    let script = format!(
        "profile:hz:499 /pid == {pid}/ {{ @[tid] = curtask->thread.fsbase; }} interval:s:2 {{ exit(); }}"
    );
    let Some(text) = pyro_testkit::bpftrace(&script) else {
        return;
    };
    // `@[tid]: fsbase`
    let fsbase: std::collections::HashMap<u64, u64> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("@[")?.split_once("]: ")?;
            Some((k.parse().ok()?, v.trim().parse().ok()?))
        })
        .collect();
    let mem = pyro_python::ProcMem::open(pid).expect("open mem");
    let cfg = walker.process().config;
    let threads = walker.stacks().expect("walk");
    assert_eq!(threads.len(), 3);
    for t in &threads {
        let fs = match t.native_thread_id {
            Some(tid) => {
                let fs = *fsbase
                    .get(&tid)
                    .unwrap_or_else(|| panic!("{}: thread {tid} not sampled: {text}", py.label));
                assert_eq!(
                    fs, t.thread_id,
                    "{}: fsbase of {tid} is not pthread_self",
                    py.label
                );
                fs
            }
            // Before 3.11 there is no native id to pair them: every thread pointer must be
            // among the sampled fsbase values.
            None => {
                assert!(
                    fsbase.values().any(|&v| v == t.thread_id),
                    "{}: thread {:#x} not among fsbase values {fsbase:?}",
                    py.label,
                    t.thread_id
                );
                t.thread_id
            }
        };
        let tstate = pyro_python::walker::thread_state_from_tls(&mem, &cfg, fs).expect("tls");
        assert_eq!(tstate, t.tstate, "{}: thread {:#x}", py.label, t.thread_id);
    }
    eprintln!(
        "{}: fsbase -> pthread key or static TLS -> PyThreadState for {} threads",
        py.label,
        threads.len()
    );
}

/// `py-spy dump` threads as (function, file base name) lists, leaf first.
fn parse_pyspy(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("Thread ") {
            out.push(Vec::new());
        } else if let (Some(rest), Some(cur)) = (line.strip_prefix("    "), out.last_mut()) {
            // `name (path:line)`
            let Some((name, loc)) = rest.trim().split_once(" (") else {
                continue;
            };
            let path = loc
                .trim_end_matches(')')
                .rsplit_once(':')
                .map_or(loc, |(p, _)| p);
            let base = path.rsplit('/').next().unwrap_or(path);
            cur.push((name.to_string(), base.to_string()));
        }
    }
    out
}

/// A running process read in a loop: the stacks stay readable and rooted at the module level.
fn check_busy(py: &Python) {
    let w = start(py, "busy", 1);
    let walker = walker(py, w.0.id());
    let leaves = [
        "main.py leaf_a",
        "main.py leaf_b",
        "main.py Busy.leaf_c",
        "helper.py leaf_d",
    ];
    let mut seen = [0u32; 4];
    let (mut good, mut total) = (0u32, 0u32);
    while total < 2000 && (seen.contains(&0) || total < 200) {
        total += 1;
        // Irregular gaps, so that the walks do not alias with the workload's loop.
        std::thread::sleep(std::time::Duration::from_micros(u64::from(
            total * 7919 % 1500,
        )));
        // The process runs while we read it: a walk may hit a frame being torn down.
        let Ok(threads) = walker.stacks() else {
            continue;
        };
        let Some(t) = threads.first() else { continue };
        let s = names(t);
        let n = s.len();
        if t.stack.errors == 0 && n >= 3 && s[n - 2..] == ["main.py busy", "main.py <module>"] {
            good += 1;
            if let Some(i) = leaves.iter().position(|l| s[n - 3] == *l) {
                seen[i] += 1;
            }
        }
    }
    eprintln!("{}: {good}/{total} clean walks, leaves {seen:?}", py.label);
    assert!(
        good * 10 >= total * 9,
        "{}: only {good}/{total} clean walks",
        py.label
    );
    assert!(!seen.contains(&0), "{}: leaves seen {seen:?}", py.label);
}

#[test]
fn debian_python_311() {
    if !can_read_memory() {
        return;
    }
    let Some(py) = support::debian_311() else {
        return;
    };
    check_threads(&py, "idle");
    check_threads(&py, "spin");
    check_fsbase(&py);
    check_busy(&py);
}

#[test]
fn pyenv_python_311() {
    if !can_read_memory() {
        return;
    }
    let Some(py) = support::pyenv(11) else { return };
    check_threads(&py, "idle");
    check_threads(&py, "spin");
    check_fsbase(&py);
    check_busy(&py);
}

/// The other versions of the table, where pyenv has them (not on a fresh CI machine).
#[test]
fn pyenv_other_versions() {
    if !can_read_memory() {
        return;
    }
    for minor in [8, 9, 10, 12, 13] {
        let Some(py) = support::pyenv(minor) else {
            continue;
        };
        check_threads(&py, "idle");
        check_threads(&py, "spin");
        check_fsbase(&py);
        check_busy(&py);
        eprintln!("CHECKED: walker on {}", py.label);
    }
}

/// Debian sid's 3.13, 3.14 and 3.15, each in the root `.ci/python-roots.sh` builds, run with
/// `chroot`: an ordinary process of this host with its own files, as in a container.
#[test]
fn sid_python_313_to_315() {
    if !can_read_memory() {
        return;
    }
    for minor in [13, 14, 15] {
        let Some(py) = support::sid(minor) else {
            continue;
        };
        check_threads(&py, "idle");
        check_threads(&py, "spin");
        check_fsbase(&py);
        check_busy(&py);
        eprintln!("CHECKED: walker on {}", py.label);
    }
}

/// Counts reads, to state the walk's cost in the BPF helper calls it will make.
struct Counting<'a>(&'a dyn pyro_python::Memory, std::cell::Cell<(u32, usize)>);

impl pyro_python::Memory for Counting<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), pyro_python::MemError> {
        let (n, b) = self.1.get();
        self.1.set((n + 1, b + buf.len()));
        self.0.read(addr, buf)
    }
}

/// Reads per sample on 3.11 without symbol interning: 3 to find the thread state, 2 for the top
/// frame, 18 per frame (`previous`, `f_code`, code `ob_type`, and per name (3) the pointer,
/// `ob_type`, `state`, `length` and the characters); 3.12+ also reads `owner` (19).
#[test]
fn reads_per_frame_311() {
    if !can_read_memory() {
        return;
    }
    let Some(py) = support::pyenv(11) else { return };
    let w = start(&py, "idle", 3);
    let pid = w.0.id();
    let walker = walker(&py, pid);
    let cfg = walker.process().config;
    let mem = pyro_python::ProcMem::open(pid).expect("mem");
    let counting = Counting(&mem, std::cell::Cell::new((0, 0)));
    for t in walker.stacks().expect("walk") {
        counting.1.set((0, 0));
        let tstate =
            pyro_python::walker::thread_state_from_tls(&counting, &cfg, t.thread_id).expect("tls");
        assert_eq!(counting.1.get().0, 3);
        let stack = pyro_python::walker::walk_thread(&counting, &cfg, tstate).expect("walk");
        let (reads, bytes) = counting.1.get();
        let frames = stack.frames.len() as u32;
        assert_eq!(reads, 3 + 2 + 18 * frames, "{frames} frames");
        eprintln!(
            "{}: {frames} frames: {reads} reads, {bytes} bytes",
            py.label
        );
    }
}

/// Versions outside the table (pyenv's 3.6 and 3.7 where installed) are detected as CPython and
/// reported as unsupported, with the version.
#[test]
fn unsupported_versions_are_reported() {
    if !can_read_memory() {
        return;
    }
    for minor in [6, 7] {
        let Some(prefix) = support::pyenv_prefix(minor) else {
            eprintln!("UNCHECKED: no pyenv 3.{minor} to check the unsupported path on");
            continue;
        };
        let mut child = Command::new(prefix.join(format!("bin/python3.{minor}")))
            .args([
                "-c",
                "import time; print('ready', flush=True); time.sleep(60)",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let r = ReferenceWalker::new(child.id());
        let _ = child.kill();
        let _ = child.wait();
        match r {
            Err(pyro_python::DetectError::UnsupportedVersion { version, .. }) => {
                assert_eq!((version.major, version.minor), (3, minor));
            }
            other => panic!("3.{minor}: {other:?}"),
        }
    }
}

#[test]
fn not_python() {
    if !can_read_memory() {
        return;
    }
    let mut child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let r = ReferenceWalker::new(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(r, Ok(None)), "{r:?}");
}
