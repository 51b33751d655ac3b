//! Helpers shared by the eBPF integration tests: C workloads compiled with frame pointers,
//! driving a [`Collector`] by hand, and reading its profiles back.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyro_core::pprof::{self, DEFAULT_MAX_DECODED_SIZE, FoldedStack};
use pyro_core::{Labels, Profile, Target};
use pyro_ebpf::{Collector, EbpfConfig};

/// Serializes the tests of one binary: each loads its own program and runs CPU-bound
/// workloads, and the machine may have only a couple of CPUs.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether eBPF tests can run (root); fails instead when `PYRO_REQUIRE_BPF=1`.
pub(crate) fn bpf() -> bool {
    pyro_testkit::bpf_available()
}

/// Compiles C `source` with frame pointers and no inlining (so every function is a frame),
/// returning the binary in `dir`, or `None` when gcc is missing (and tools are not required).
///
/// gcc sets up no frame in a leaf function that needs no stack, whatever the flags; the kernel's
/// frame-pointer walk then skips the leaf's caller. Workloads give their leaves a stack slot.
pub(crate) fn compile_c(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let gcc = pyro_testkit::tool("gcc")?;
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let bin = dir.join(name);
    let out = Command::new(gcc)
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(bin)
}

/// A workload started with its stdin piped: it waits for a line before working, so the
/// collector can be attached first.
pub(crate) struct Workload {
    pub(crate) child: Child,
}

impl Workload {
    pub(crate) fn spawn(bin: &Path, args: &[&str]) -> Self {
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child }
    }

    pub(crate) fn spawn_cmd(cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the exit, returning stdout.
    pub(crate) fn wait(mut self) -> String {
        drop(self.child.stdin.take());
        let out = std::mem::replace(&mut self.child, dummy())
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "workload failed: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

fn dummy() -> Child {
    Command::new("true").spawn().unwrap()
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A target for one pid.
pub(crate) fn pid_target(pid: u32, service: &str) -> Target {
    Target::new(Labels::from_iter([
        ("__process_pid__", pid.to_string().as_str()),
        ("service_name", service),
    ]))
}

/// Polls `collector` every 100 ms until `done` says so or `limit` passes.
pub(crate) fn poll_until(
    collector: &mut Collector,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !done() && start.elapsed() < limit {
        collector.poll();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The decoded pprof of a profile.
pub(crate) fn decode(p: &Profile) -> pprof::Profile {
    pprof::decode(&p.raw, DEFAULT_MAX_DECODED_SIZE).unwrap()
}

/// Folded stacks of a profile (root first) and its total value.
pub(crate) fn stacks(p: &Profile) -> Vec<FoldedStack> {
    pprof::folded(&decode(p), 0)
}

/// The profile of `pid` among `profiles` (matched through its `__process_pid__` label).
pub(crate) fn profile_of(profiles: &[Profile], pid: u32) -> Option<&Profile> {
    let pid = pid.to_string();
    profiles
        .iter()
        .find(|p| p.labels.get("__process_pid__") == Some(pid.as_str()))
}

/// Checks a profile with `go tool pprof -top` (an independent pprof reader).
pub(crate) fn check_with_go_pprof(p: &Profile, dir: &Path) {
    let file = dir.join(format!("profile-{}.pb.gz", rand_suffix()));
    std::fs::write(&file, &p.raw).unwrap();
    if let Some(top) = pyro_testkit::go_pprof(&["-top"], &file) {
        assert!(
            top.contains("flat%"),
            "unexpected go tool pprof output: {top}"
        );
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A collector driven by hand with `config`, profiling `targets`.
pub(crate) fn collector(config: EbpfConfig, targets: Vec<Target>) -> pyro_ebpf::Collector {
    let mut c = pyro_ebpf::Collector::new(&config).expect("load the collector (root?)");
    c.set_targets(&targets);
    c
}

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub(crate) use pyro_testkit::Recorder;

/// A C program that waits for a line on stdin, then burns CPU in `spin_<name>` (called from
/// `main` through `work_<name>`) for `seconds` (first argument; negative = forever).
pub(crate) fn spinner_source(name: &str) -> String {
    format!(
        r#"
#include <stdio.h>
#include <time.h>
volatile unsigned long sink;
static double cpu_now(void) {{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}}
__attribute__((noinline)) void spin_{name}(long n) {{
    volatile long acc = 0;
    for (long i = 0; i < n; i++) acc += i;
    sink += acc;
}}
__attribute__((noinline)) void work_{name}(long n) {{ spin_{name}(n); }}
int main(int argc, char **argv) {{
    double seconds = -1;
    if (argc > 1) sscanf(argv[1], "%lf", &seconds);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    double start = cpu_now();
    while (seconds < 0 || cpu_now() - start < seconds) work_{name}(1000000);
    return 0;
}}
"#
    )
}

/// Whether some stack of `p` holds all of `frames` in this order (not necessarily adjacent).
pub(crate) fn has_path(p: &Profile, frames: &[&str]) -> bool {
    stacks(p).iter().any(|s| {
        let mut it = s.frames.iter();
        frames.iter().all(|f| it.any(|x| x == f))
    })
}
