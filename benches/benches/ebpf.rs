//! Overhead of the eBPF collector (`pyro-ebpf`), measured for `BENCHMARKS.md`:
//!
//! 1. its own CPU time over 60 s at 97 Hz on every CPU with one busy process per CPU, side by
//!    side in the same run with `bpftrace -e 'profile:hz:97 { @[ustack, kstack] = count(); }'`,
//!    plus the in-kernel cost per sample of both programs (`kernel.bpf_stats_enabled`);
//! 2. its peak RSS with 200 running processes as targets.
//!
//! Needs root and `bpftrace`. Run with `cargo bench -p pyro-benches --bench ebpf`
//! (`PYRO_EBPF_BENCH_SECS` changes the 60 s). A plain `cargo test` run does nothing.
#![allow(missing_docs, reason = "benchmark binary")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyro_core::{AppendError, DynReceiver, Labels, Profile, Receiver, Target};
use pyro_ebpf::{Collector, EbpfConfig};
use pyro_testkit::measure::self_cpu;

const WORKER_ENV: &str = "PYRO_EBPF_BENCH_WORKER";
const PHASE_ENV: &str = "PYRO_EBPF_BENCH_PHASE";

fn main() {
    if let Ok(mode) = std::env::var(WORKER_ENV) {
        worker(&mode);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("ebpf bench: run with `cargo bench -p pyro-benches --bench ebpf` (as root)");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("ebpf bench: SKIPPED, needs root");
        return;
    }
    let secs: u64 = std::env::var("PYRO_EBPF_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // Each phase runs in a fresh process, so that its peak RSS is its own.
    let Ok(phase) = std::env::var(PHASE_ENV) else {
        for phase in ["cpu", "rss"] {
            let status = Command::new(std::env::current_exe().expect("own path"))
                .arg("--bench")
                .env(PHASE_ENV, phase)
                .status()
                .expect("run a bench phase");
            assert!(status.success(), "phase {phase} failed");
        }
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match phase.as_str() {
        "cpu" => rt.block_on(cpu_side_by_side(Duration::from_secs(secs))),
        _ => rt.block_on(rss_with_200_targets(Duration::from_secs(secs.min(30)))),
    }
}

// ---- workers -------------------------------------------------------------------------------

#[inline(never)]
fn spin_leaf(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = std::hint::black_box(acc.wrapping_add(i));
    }
    acc
}

#[inline(never)]
fn spin_mid(n: u64) -> u64 {
    spin_leaf(n) ^ 1
}

/// `busy`: spin forever. `light`: spin ~0.2 ms every 100 ms.
fn worker(mode: &str) {
    loop {
        let start = Instant::now();
        let budget = if mode == "busy" {
            Duration::from_secs(1)
        } else {
            Duration::from_micros(200)
        };
        while start.elapsed() < budget {
            std::hint::black_box(spin_mid(1_000));
        }
        if mode != "busy" {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct Workers(Vec<Child>);

impl Workers {
    fn spawn(mode: &str, n: usize) -> Self {
        let exe = std::env::current_exe().expect("own path");
        Self(
            (0..n)
                .map(|_| {
                    Command::new(&exe)
                        .env(WORKER_ENV, mode)
                        .spawn()
                        .expect("spawn worker")
                })
                .collect(),
        )
    }

    fn targets(&self) -> Vec<Target> {
        self.0
            .iter()
            .map(|c| pid_target(c.id(), "bench-worker"))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pid_target(pid: u32, service: &str) -> Target {
    Target::new(Labels::from_iter([
        ("__process_pid__", pid.to_string().as_str()),
        ("service_name", service),
    ]))
}

/// Every process on the host, as a process-discovery target list would have it.
fn all_processes() -> Vec<Target> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .map(|pid| pid_target(pid, "host"))
        .collect()
}

// ---- measurement ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Discard {
    profiles: AtomicU64,
    bytes: AtomicU64,
}

#[pyro_core::async_trait]
impl Receiver for Discard {
    async fn append(&self, p: Profile) -> Result<(), AppendError> {
        self.profiles.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(p.raw.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// CPU time (user + system) of another process, from `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Peak RSS (`VmHWM`) of a process, in KiB.
fn peak_rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sum of `run_time_ns` and `run_cnt` over the BPF programs process `pid` holds open.
fn bpf_prog_stats(pid: &str) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return total;
    };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        total.0 += field("run_time_ns:");
        total.1 += field("run_cnt:");
    }
    total
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn cpu_side_by_side(window: Duration) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _busy = Workers::spawn("busy", cpus);
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");

    let mut bpftrace = Command::new("bpftrace")
        .args(["-e", "profile:hz:97 { @[ustack, kstack] = count(); }"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpftrace (apt install bpftrace)");
    let bt_pid = bpftrace.id();

    let sink = Arc::new(Discard::default());
    let cpu_before_load = self_cpu();
    let (handle, run) = Collector::builder(EbpfConfig::default())
        .targets(all_processes())
        .forward_to([sink.clone() as DynReceiver])
        .build()
        .expect("load the collector");
    let task = tokio::spawn(run);
    let load_cpu = self_cpu() - cpu_before_load;

    // Let bpftrace finish compiling and attaching before the window starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (pyro0, bt0) = (self_cpu(), proc_cpu(bt_pid));
    let bt_startup = bt0;
    let (pyro_bpf0, bt_bpf0) = (bpf_prog_stats("self"), bpf_prog_stats(&bt_pid.to_string()));
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = start.elapsed();
    let (pyro1, bt1) = (self_cpu(), proc_cpu(bt_pid));
    let (pyro_bpf1, bt_bpf1) = (bpf_prog_stats("self"), bpf_prog_stats(&bt_pid.to_string()));
    let bt_rss = peak_rss_kib(&bt_pid.to_string());
    let bt_steady = bt1.saturating_sub(bt0);

    // bpftrace prints (and symbolizes) its map on SIGINT: count that too.
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(bt_pid as i32, libc::SIGINT) };
    let bt_before_exit = proc_cpu(bt_pid);
    let mut exit_cpu = Duration::ZERO;
    for _ in 0..600 {
        let now = proc_cpu(bt_pid);
        if bpftrace.try_wait().ok().flatten().is_some() {
            break;
        }
        exit_cpu = now.saturating_sub(bt_before_exit);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = bpftrace.kill();
    let _ = bpftrace.wait();

    drop(handle);
    let _ = task.await;
    if let Some(v) = stats_before {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", v.trim());
    }

    let pyro_steady = pyro1.saturating_sub(pyro0);
    let per_sample =
        |(t0, c0): (u64, u64), (t1, c1): (u64, u64)| (t1 - t0) as f64 / (c1 - c0).max(1) as f64;
    println!(
        "== eBPF collector vs bpftrace, {cpus} CPUs busy, 97 Hz, {:.0} s window",
        elapsed.as_secs_f64()
    );
    println!(
        "pyro-ebpf: {:.0} ms CPU in window ({:.3}% of one CPU), load+attach {:.0} ms, peak RSS {} KiB, {} profiles / {} bytes sent",
        ms(pyro_steady),
        100.0 * pyro_steady.as_secs_f64() / elapsed.as_secs_f64(),
        ms(load_cpu),
        peak_rss_kib("self"),
        sink.profiles.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed),
    );
    println!(
        "bpftrace:  {:.0} ms CPU in window ({:.3}% of one CPU), startup {:.0} ms, printing at exit {:.0} ms, peak RSS {} KiB",
        ms(bt_steady),
        100.0 * bt_steady.as_secs_f64() / elapsed.as_secs_f64(),
        ms(bt_startup),
        ms(exit_cpu),
        bt_rss,
    );
    println!(
        "in-kernel per sample: pyro-ebpf {:.0} ns ({} runs), bpftrace {:.0} ns ({} runs)",
        per_sample(pyro_bpf0, pyro_bpf1),
        pyro_bpf1.1 - pyro_bpf0.1,
        per_sample(bt_bpf0, bt_bpf1),
        bt_bpf1.1 - bt_bpf0.1,
    );
    // bpftrace aggregates in the kernel and symbolizes once, when it prints at exit; pyro
    // symbolizes as it goes and sends a profile per process every 15 s. Compare the user-space
    // CPU each needs to turn the window's samples into output.
    let pyro_total = pyro_steady + load_cpu;
    let bt_total = bt_steady + exit_cpu + bt_startup;
    println!(
        "user-space CPU to turn the window's samples into output: pyro-ebpf {:.0} ms (window + load), bpftrace {:.0} ms (startup + window + exit): ratio {:.3}",
        ms(pyro_total),
        ms(bt_total),
        pyro_total.as_secs_f64() / bt_total.as_secs_f64().max(1e-9)
    );
}

async fn rss_with_200_targets(window: Duration) {
    let workers = Workers::spawn("light", 200);
    let sink = Arc::new(Discard::default());
    let rss_before = peak_rss_kib("self");
    let cpu_before = self_cpu();
    // `PYRO_EBPF_BENCH_DEBUG_INFO=off` or a byte limit: line info off, or its memory limit.
    let mut config = EbpfConfig {
        collect_interval: Duration::from_secs(10),
        ..EbpfConfig::default()
    };
    match std::env::var("PYRO_EBPF_BENCH_DEBUG_INFO").as_deref() {
        Ok("off") => config.debug_info = false,
        Ok(limit) => config.debug_info_memory_limit = limit.parse().expect("a byte count"),
        Err(_) => {}
    }
    eprintln!(
        "debug_info {}, debug_info_memory_limit {}",
        config.debug_info, config.debug_info_memory_limit
    );
    let (handle, run) = Collector::builder(config)
        .targets(workers.targets())
        .forward_to([sink.clone() as DynReceiver])
        .build()
        .expect("load the collector");
    let task = tokio::spawn(run);
    tokio::time::sleep(window).await;
    drop(handle);
    let _ = task.await;
    drop(workers);
    println!(
        "== 200 running target processes, {:.0} s: peak RSS {} KiB (process before the collector: {} KiB), CPU {:.0} ms, {} profiles sent",
        window.as_secs_f64(),
        peak_rss_kib("self"),
        rss_before,
        ms(self_cpu() - cpu_before),
        sink.profiles.load(Ordering::Relaxed),
    );
}
