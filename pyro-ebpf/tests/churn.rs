//! Process churn soak: about 1 000 short-lived processes a minute (a few ms to a couple of
//! seconds of CPU each; one in ten in its own mount namespace, one in ten a shell that burns
//! CPU and then execs CPython), all in one cgroup named like a container
//! (`pyro-churn-<64 hex>`), profiled through a `__container_id__` target with `pid_label`.
//!
//! Checked, against what the test itself started:
//! - every process that ran ≥ 100 ms of CPU is in the profiles under its own pid (`pid` sample
//!   label) and its own name (root frame), a shell that exec'd Python under the interpreter's
//!   name, its Python frames read when it ran long enough (the interpreter detected after the
//!   exec); at most 2 % may be missing (or only under an earlier name): those that exited
//!   before the collector's next poll after their first sample, whose container id can no
//!   longer be read (README); processes
//!   of the first interval, while the collector loads what its later polls reuse (kernel
//!   symbols, libc's debug file), are not counted;
//! - the collector's RSS and the kernel's per-process map entries stay flat (within 10 %, map
//!   entries with a small absolute slack for the processes alive at that moment) after the
//!   warm-up (the first minute, or the first half of a shorter run);
//! - no warning storm: at most one warning or error per call site per collection interval.
//!
//! `PYRO_SOAK_SECS` sets the length (60 s by default, as in CI); the 10-minute figures are in
//! BENCHMARKS.md.

mod common;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pyro_core::{Labels, Target};
use pyro_ebpf::{EbpfConfig, KernelMapEntries};
use tracing_subscriber::layer::SubscriberExt;

/// Burns the CPU time (ms) given as its argument, in `churn_spin`.
const CHURN_C: &str = r#"
#include <stdlib.h>
#include <time.h>
volatile unsigned long sink;
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
__attribute__((noinline)) void churn_spin(double seconds) {
    volatile long acc = 0;
    double start = cpu_now();
    while (cpu_now() - start < seconds)
        for (int i = 0; i < 1000; i++) acc += i;
    sink += acc;
}
int main(int argc, char **argv) {
    churn_spin(argc > 1 ? atof(argv[1]) / 1000.0 : 0.01);
    return 0;
}
"#;

/// Burns CPU in `churn_py_spin` until the process (shell included) has used `argv[1]` ms.
const CHURN_PY: &str = r#"
import sys, time
def churn_py_spin(total):
    x = 0
    while time.process_time() < total:
        for i in range(1000):
            x += i
    return x
churn_py_spin(float(sys.argv[1]) / 1000.0)
"#;

/// The interpreter the shell execs (Debian's, installed by `.ci/run`).
const PYTHON: &str = "/usr/bin/python3.11";
/// Names of the native workload's copies (each a distinct file and `comm`).
const NAMES: [&str; 6] = [
    "churn-ant",
    "churn-bee",
    "churn-cat",
    "churn-dog",
    "churn-eel",
    "churn-fox",
];
/// One process started every this often: 1 000 a minute.
const SPAWN_EVERY: Duration = Duration::from_millis(60);
/// Collection interval of the soak.
const INTERVAL: Duration = Duration::from_secs(5);
/// Processes with at least this CPU time must be in the profiles...
const MUST_APPEAR_MS: u64 = 100;
/// ...but for this share, which exit before the collector's next poll.
const MAY_MISS: f64 = 0.02;
/// Shells that became Python for at least this long must show Python frames (the interpreter
/// is detected once it has initialized, at a poll after the exec).
const PYTHON_FRAMES_MS: u64 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Native,
    MountNamespace,
    ShellThenPython,
}

#[derive(Debug)]
struct Started {
    /// Since the churn started.
    at: Duration,
    pid: u32,
    name: String,
    kind: Kind,
    cpu_ms: u64,
}

/// Warnings and errors by call site, taken at each collection.
#[derive(Clone, Default)]
struct WarnCount(Arc<Mutex<HashMap<String, usize>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WarnCount {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() <= tracing::Level::WARN {
            let site = format!(
                "{} {}:{}",
                meta.level(),
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0)
            );
            *self.0.lock().unwrap().entry(site).or_default() += 1;
        }
    }
}

/// The CPU time of the i-th process: three in four a few ms, one in five 100–150 ms, one in
/// thirty 1–2 s (about 1 CPU of load at 1 000 processes a minute).
fn cpu_ms(i: u64, rnd: u64) -> u64 {
    match i % 30 {
        0 => 1000 + rnd % 1000,
        1..=6 => 100 + rnd % 50,
        _ => 2 + rnd % 18,
    }
}

fn spawn(
    i: u64,
    rnd: u64,
    bins: &[PathBuf],
    unshare: &Path,
    py: &Path,
    procs: &CString,
) -> (Child, Started) {
    let cpu = cpu_ms(i, rnd);
    let kind = match (rnd >> 32) % 10 {
        3 => Kind::MountNamespace,
        7 => Kind::ShellThenPython,
        _ => Kind::Native,
    };
    let bin = &bins[(i as usize / 10) % bins.len()];
    let mut cmd = match kind {
        Kind::Native => {
            let mut c = Command::new(bin);
            c.arg(cpu.to_string());
            c
        }
        Kind::MountNamespace => {
            let mut c = Command::new(unshare);
            c.args(["-m", "--propagation", "private"])
                .arg(bin)
                .arg(cpu.to_string());
            c
        }
        Kind::ShellThenPython => {
            // The shell burns some CPU under its own name first, then becomes Python.
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(format!(
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec {PYTHON} {} {}",
                py.display(),
                cpu.max(60)
            ));
            c
        }
    };
    let procs = procs.clone();
    // SAFETY: only async-signal-safe calls between fork and exec: the child writes "0" (itself)
    // into the cgroup's `cgroup.procs`, so it runs all its life in the cgroup.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a churn process");
    let name = match kind {
        Kind::ShellThenPython => "python3.11".to_owned(),
        _ => bin.file_name().unwrap().to_string_lossy().into_owned(),
    };
    let cpu_ms = if kind == Kind::ShellThenPython {
        cpu.max(60)
    } else {
        cpu
    };
    let started = Started {
        at: Duration::ZERO,
        pid: child.id(),
        name,
        kind,
        cpu_ms,
    };
    (child, started)
}

/// A cgroup named like a container, removed at the end.
struct ChurnCgroup {
    dir: PathBuf,
    id: String,
}

impl ChurnCgroup {
    /// In the cgroup v2 hierarchy when there is one (`/sys/fs/cgroup` or, on a hybrid host,
    /// `/sys/fs/cgroup/unified`), else in the v1 `pids` hierarchy.
    fn create() -> Self {
        let base = [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/pids",
        ]
        .iter()
        .map(Path::new)
        .find(|b| b.join("cgroup.procs").exists())
        .expect("a writable cgroup hierarchy (root)");
        let id = format!("{:016x}", std::process::id()).repeat(4);
        let dir = base.join(format!("pyro-churn-{id}"));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Self { dir, id }
    }
}

impl Drop for ChurnCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What the profiles say about one pid.
#[derive(Debug, Default)]
struct Seen {
    names: HashSet<String>,
    python_frames: bool,
}

fn record(profiles: &[pyro_core::Profile], seen: &mut HashMap<u32, Seen>) {
    for p in profiles {
        let pprof = decode(p);
        for s in &pprof.sample {
            let Some(pid) = s
                .label
                .iter()
                .find(|l| pprof.string(l.key) == "pid")
                .and_then(|l| pprof.string(l.str).parse::<u32>().ok())
            else {
                continue;
            };
            let names: Vec<String> = s
                .location_id
                .iter()
                .filter_map(|id| pprof.location.iter().find(|l| l.id == *id))
                .flat_map(|l| &l.line)
                .filter_map(|line| pprof.function.iter().find(|f| f.id == line.function_id))
                .map(|f| pprof.string(f.name).to_owned())
                .collect();
            let entry = seen.entry(pid).or_default();
            if let Some(root) = names.last() {
                entry.names.insert(root.clone());
            }
            if names.iter().any(|n| n.contains("churn_py_spin")) {
                entry.python_frames = true;
            }
        }
    }
}

/// A measure checked for flatness: name, how it is read, absolute slack.
type Measure = (&'static str, fn(&Point) -> u64, f64);

#[derive(Debug, Clone, Copy)]
struct Point {
    at: Duration,
    rss_kib: u64,
    maps: KernelMapEntries,
    tracked: usize,
}

#[test]
fn churn_soak_keeps_memory_and_maps_flat_and_every_process_named() {
    if !bpf() {
        return;
    }
    let _guard = serial();
    let secs: u64 = std::env::var("PYRO_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let warm_up = Duration::from_secs(secs.min(120) / 2).max(Duration::from_secs(10));
    let (Some(unshare), Some(_)) = (
        pyro_testkit::tool("unshare"),
        pyro_testkit::tool("python3.11"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(first) = compile_c(dir.path(), NAMES[0], CHURN_C) else {
        return;
    };
    let mut bins = vec![first.clone()];
    for name in &NAMES[1..] {
        let bin = dir.path().join(name);
        std::fs::copy(&first, &bin).unwrap();
        bins.push(bin);
    }
    let py = dir.path().join("churn.py");
    std::fs::write(&py, CHURN_PY).unwrap();

    let warnings = WarnCount::default();
    let subscriber = tracing_subscriber::registry().with(warnings.clone());
    let _log = tracing::subscriber::set_default(subscriber);

    let cgroup = ChurnCgroup::create();
    let config = EbpfConfig {
        sample_rate: 199,
        pid_label: true,
        ..EbpfConfig::default()
    };
    let target = Target::new(Labels::from_iter([
        ("__container_id__", cgroup.id.as_str()),
        ("service_name", "churn"),
    ]));
    let mut collector = collector(config, vec![target]);
    let procs = CString::new(
        cgroup
            .dir
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let started: Arc<Mutex<Vec<Started>>> = Arc::default();
    let launcher = {
        let started = started.clone();
        let unshare = unshare.clone();
        std::thread::spawn(move || {
            let mut children: Vec<Child> = Vec::new();
            let mut rnd: u64 = 0x2545_f491_4f6c_dd1d;
            let mut i = 0u64;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                rnd ^= rnd << 13;
                rnd ^= rnd >> 7;
                rnd ^= rnd << 17;
                let (child, mut s) = spawn(i, rnd, &bins, &unshare, &py, &procs);
                s.at = start.elapsed();
                children.push(child);
                started.lock().unwrap().push(s);
                i += 1;
                children.retain_mut(|c| c.try_wait().ok().flatten().is_none());
                next += SPAWN_EVERY;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            for mut c in children {
                let _ = c.wait();
            }
        })
    };

    let mut seen: HashMap<u32, Seen> = HashMap::new();
    let mut points: Vec<Point> = Vec::new();
    let mut storms: Vec<String> = Vec::new();
    let mut next_collect = start + INTERVAL;
    let mut collect = |collector: &mut pyro_ebpf::Collector, seen: &mut HashMap<u32, Seen>| {
        let profiles = collector.collect();
        record(&profiles, seen);
        points.push(Point {
            at: start.elapsed(),
            rss_kib: rss_kib(),
            maps: collector.kernel_map_entries(),
            tracked: collector.tracked_processes(),
        });
        for (site, n) in warnings.0.lock().unwrap().drain() {
            if n > 1 {
                storms.push(format!("{n} x {site} at {:?}", start.elapsed()));
            }
        }
    };
    while !launcher.is_finished() {
        let t = Instant::now();
        let st = collector.poll();
        if t.elapsed() > Duration::from_millis(300) {
            println!(
                "slow poll {:?} {st:?} tracked {}",
                t.elapsed(),
                collector.tracked_processes()
            );
        }
        if Instant::now() >= next_collect {
            collect(&mut collector, &mut seen);
            next_collect += INTERVAL;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    launcher.join().unwrap();
    collector.poll();
    collect(&mut collector, &mut seen);

    let started = std::mem::take(&mut *started.lock().unwrap());
    let mut report = format!(
        "{} processes started in {secs} s, {} pids in the profiles\n",
        started.len(),
        seen.len()
    );
    for p in &points {
        report += &format!(
            "  {:>5.1}s rss {} KiB, tracked {}, maps {:?}\n",
            p.at.as_secs_f64(),
            p.rss_kib,
            p.tracked,
            p.maps
        );
    }
    let mut failures = Vec::new();
    let mut missing = Vec::new();
    let mut must = 0;
    let (mut python_must, mut python_read) = (0, 0);
    // The collector's first polls load what later ones reuse (kernel symbols, libc's debug
    // file): processes of the first interval may end before they are matched.
    for s in started
        .iter()
        .filter(|s| s.cpu_ms >= MUST_APPEAR_MS && s.at >= INTERVAL)
    {
        must += 1;
        match seen.get(&s.pid) {
            None => missing.push(format!(
                "pid {} ({}, {:?}, {} ms)",
                s.pid, s.name, s.kind, s.cpu_ms
            )),
            Some(v) if !v.names.contains(&s.name) => missing.push(format!(
                "pid {} ({:?}, {} ms) named {:?}, not {}",
                s.pid, s.kind, s.cpu_ms, v.names, s.name
            )),
            Some(v) => {
                if s.kind == Kind::ShellThenPython && s.cpu_ms >= PYTHON_FRAMES_MS {
                    python_must += 1;
                    python_read += usize::from(v.python_frames);
                }
            }
        }
    }
    report += &format!(
        "{must} processes started after the first interval ran >= {MUST_APPEAR_MS} ms, {} of them not in the profiles or not under their name {missing:?}; \
         {python_read} of {python_must} shells that became Python for >= {PYTHON_FRAMES_MS} ms \
         show Python frames\n",
        missing.len()
    );
    // A process matched by container id must still be alive at the collector's first poll
    // after its first sample (its cgroup is read from /proc): on a loaded machine a few exit
    // before (README, "Process lifecycle").
    if missing.len() as f64 > must as f64 * MAY_MISS {
        failures.push(format!(
            "{} of {must} processes that ran >= {MUST_APPEAR_MS} ms are not in the profiles under their name",
            missing.len()
        ));
    }
    if python_read < python_must {
        failures.push(format!(
            "only {python_read} of {python_must} shells that exec'd Python show Python frames"
        ));
    }
    // Flat after the warm-up: the highest value of the second half of the rest is within 10 %
    // of the highest of its first half (the maps follow the processes alive at each moment,
    // so map entries get an absolute slack of a few processes' worth).
    let after: Vec<&Point> = points.iter().filter(|p| p.at >= warm_up).collect();
    let (early, late) = after.split_at(after.len() / 2);
    if early.is_empty() {
        failures.push("too few measurements after the warm-up".into());
    }
    let peak =
        |points: &[&Point], f: fn(&Point) -> u64| points.iter().map(|p| f(p)).max().unwrap_or(0);
    let measures: [Measure; 5] = [
        ("RSS (KiB)", |p| p.rss_kib, 0.0),
        ("kernel map pids", |p| p.maps.pids, 32.0),
        ("kernel map python", |p| p.maps.python, 8.0),
        ("kernel map unwind_procs", |p| p.maps.unwind_procs, 32.0),
        (
            "kernel map unwind_mappings",
            |p| p.maps.unwind_mappings,
            256.0,
        ),
    ];
    for (name, f, slack) in measures {
        let (before, then) = (peak(early, f), peak(late, f));
        report += &format!("  {name}: peak {before} then {then}\n");
        if !early.is_empty() && then as f64 > before as f64 * 1.1 + slack {
            failures.push(format!(
                "{name} grew from {before} to {then} after the warm-up"
            ));
        }
    }
    failures.extend(storms.iter().map(|s| format!("warning storm: {s}")));
    println!("{report}");
    assert!(failures.is_empty(), "{failures:#?}\n{report}");
}
