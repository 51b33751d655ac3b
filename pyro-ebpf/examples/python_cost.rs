//! What reading Python frames costs the collector (`BENCHMARKS.md`, section pyro-ebpf Python).
//!
//! Runs `tests/python/work.py` (one busy CPython thread) for `SECONDS` under a collector with
//! `python_enabled` off, then on, twice each, and prints per run: the collector's user-space CPU
//! (`getrusage(RUSAGE_SELF)`: draining, detection, naming, pprof building) and the kernel side's
//! CPU (`run_time_ns` of the perf_event program from `/proc/self/fdinfo`, with
//! `kernel.bpf_stats_enabled` switched on for the run), and the samples taken.
//!
//! `cargo run --release -p pyro-ebpf --example python_cost [python] [seconds]` as root.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyro_core::{Labels, Target};
use pyro_ebpf::{Collector, EbpfConfig};
use pyro_testkit::measure::{bpf_run_time, self_cpu as cpu_self};

fn run(python: &str, seconds: f64, enabled: bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/work.py");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(seconds.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .expect("start the workload");
    let pid = child.id();
    let target = Target::new(Labels::from_iter([
        ("__process_pid__", pid.to_string().as_str()),
        ("service_name", "python"),
    ]));
    let mut collector = Collector::new(&EbpfConfig {
        python_enabled: enabled,
        ..EbpfConfig::default()
    })
    .expect("load the collector (root?)");
    collector.set_targets(&[target]);
    let (ns0, cnt0) = bpf_run_time();
    let cpu0 = cpu_self();
    let start = Instant::now();
    child.stdin.as_mut().map(|s| s.write_all(b"go\n"));
    let mut samples = 0;
    let mut last_collect = Instant::now();
    while child.try_wait().ok().flatten().is_none()
        && start.elapsed().as_secs_f64() < seconds + 10.0
    {
        samples += collector.poll().profiled;
        if last_collect.elapsed() >= Duration::from_secs(15) {
            collector.collect();
            last_collect = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    collector.collect();
    let cpu = cpu_self() - cpu0;
    let (ns1, cnt1) = bpf_run_time();
    let runs = (cnt1 - cnt0).max(1);
    println!(
        "python_enabled={enabled:5}: {samples} samples in {:.1} s; collector user space {:.1} ms CPU ({:.1} µs/sample); kernel program {:.1} ms over {} runs ({:.2} µs/run)",
        start.elapsed().as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / samples.max(1) as f64,
        (ns1 - ns0) as f64 / 1e6,
        runs,
        (ns1 - ns0) as f64 / 1e3 / runs as f64,
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let python = args.next().unwrap_or_else(|| "/usr/bin/python3.11".into());
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats).unwrap_or_default();
    let _ = std::fs::write(stats, "1");
    for enabled in [false, true, false, true] {
        run(&python, seconds, enabled);
    }
    let _ = std::fs::write(stats, before.trim());
}
