//! What table-based unwinding costs against the frame-pointer walk (`BENCHMARKS.md`, section
//! pyro-ebpf table unwinding).
//!
//! Compiles a C workload with `gcc -O2 -fomit-frame-pointer` (three frameless leaves under two
//! levels of callers, the `unwind_truth` test's workload) and runs it for `SECONDS` under a
//! collector with `unwind_tables_enabled` off, then on, twice each, and prints per run: the CPU
//! `Collector::new` took (load and verification), the verifier's processed instructions per
//! program (`verified_insns` in `/proc/self/fdinfo`), the collector's user-space CPU while
//! running (`getrusage`), and the kernel side's CPU per sample (`run_time_ns / run_cnt` of the
//! perf_event program, tail calls included, with `kernel.bpf_stats_enabled` switched on).
//!
//! `cargo run --release -p pyro-ebpf --example unwind_cost [seconds]` as root.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyro_core::{Labels, Target};
use pyro_ebpf::{Collector, EbpfConfig};
use pyro_testkit::measure::{bpf_run_time, self_cpu as cpu_self};

const WORKLOAD: &str = include_str!("../tests/unwind_workload.c");

/// `verified_insns` of every BPF program this process holds, by program name.
fn verified_insns() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fdinfo")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Some(v) = text.lines().find_map(|l| l.strip_prefix("verified_insns:")) else {
            continue;
        };
        let tag = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_tag:"))
            .unwrap_or("")
            .trim()
            .to_string();
        out.push((tag, v.trim().parse().unwrap_or(0)));
    }
    out
}

fn run(bin: &Path, seconds: f64, tables: bool) {
    let mut child = Command::new(bin)
        .arg(seconds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the workload");
    let pid = child.id();
    let target = Target::new(Labels::from_iter([
        ("__process_pid__", pid.to_string().as_str()),
        ("service_name", "unwind"),
    ]));
    let cpu_load = cpu_self();
    let mut collector = Collector::new(&EbpfConfig {
        unwind_tables_enabled: tables,
        ..EbpfConfig::default()
    })
    .expect("load the collector (root?)");
    let load = cpu_self() - cpu_load;
    collector.set_targets(&[target]);
    let (ns0, cnt0) = bpf_run_time();
    let cpu0 = cpu_self();
    let start = Instant::now();
    child.stdin.as_mut().map(|s| s.write_all(b"go\n"));
    let mut samples = 0;
    while child.try_wait().ok().flatten().is_none()
        && start.elapsed().as_secs_f64() < seconds + 10.0
    {
        samples += collector.poll().profiled;
        std::thread::sleep(Duration::from_millis(200));
    }
    collector.collect();
    let cpu = cpu_self() - cpu0;
    let (ns1, cnt1) = bpf_run_time();
    let runs = (cnt1 - cnt0).max(1);
    println!(
        "unwind_tables_enabled={tables:5}: load {:.0} ms CPU, verified insns {:?}; {samples} samples in {:.1} s; collector user space {:.1} ms CPU; kernel program {:.1} ms over {} runs ({:.0} ns/run); counters {:?}",
        load.as_secs_f64() * 1e3,
        verified_insns(),
        start.elapsed().as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        (ns1 - ns0) as f64 / 1e6,
        runs,
        (ns1 - ns0) as f64 / runs as f64,
        collector.kernel_counters(),
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let dir = std::env::temp_dir().join(format!("pyro-unwind-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("work.c");
    std::fs::write(&src, WORKLOAD).expect("write the workload");
    let bin = dir.join("work");
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fomit-frame-pointer", "-fno-inline", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc failed");
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats).unwrap_or_default();
    let _ = std::fs::write(stats, "1");
    for tables in [false, true, false, true] {
        run(&bin, seconds, tables);
    }
    let _ = std::fs::write(stats, before.trim());
    let _ = std::fs::remove_dir_all(&dir);
}
