//! Unwind tables under a memory budget too small for all of them: 12 processes of 6 distinct
//! binaries (each ≈ 20 k functions with frames) under a 1 MiB budget. Tables are evicted,
//! the kernel bytes the metric reports stay under the budget and under what `bpftool map show`
//! says the unwinder's maps hold, and every process keeps getting profiles.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use prometheus_client::registry::Registry;
use pyro_core::DynReceiver;
use pyro_ebpf::{Collector, EbpfConfig, EbpfMetrics};

const BINARIES: usize = 6;
const PER_BINARY: usize = 2;
const FUNCTIONS: usize = 20_000;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// `bytes_memlock` of the unwinder's row array and page index, from bpftool.
fn bpftool_bytes() -> Option<u64> {
    let bpftool = pyro_testkit::tool("bpftool")?;
    let out = Command::new(bpftool)
        .args(["-j", "map", "show"])
        .output()
        .unwrap();
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        maps.iter()
            .filter(|m| matches!(m["name"].as_str(), Some("UNWIND_ROWS" | "UNWIND_PAGES")))
            .map(|m| m["bytes_memlock"].as_u64().unwrap_or(0))
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_evicted_under_a_small_budget() {
    // The only test of this binary: no serialization needed.
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(gcc) = pyro_testkit::tool("gcc") else {
        return;
    };
    // One large object, linked into 6 binaries that differ by an id string (so by build id).
    // Functions with a frame and calls: a few rows each (rows of equal rules merge).
    let mut big = String::from(
        "volatile long big_sink;\n\
         __attribute__((noinline)) long big_ext(long x) { big_sink += x; return x + 1; }\n",
    );
    for i in 0..FUNCTIONS {
        big += &format!(
            "__attribute__((noinline)) long big_{i}(long x) {{ long a = big_ext(x); return a * {i} + big_ext(a); }}\n"
        );
    }
    std::fs::write(dir.path().join("big.c"), big).unwrap();
    let ok = Command::new(&gcc)
        .current_dir(dir.path())
        .args([
            "-O1",
            "-fno-omit-frame-pointer",
            "-c",
            "big.c",
            "-o",
            "big.o",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut bins = Vec::new();
    for b in 0..BINARIES {
        let main = format!(
            r#"
#include <stdio.h>
#include <time.h>
const char binary_id[] = "binary {b}";
volatile unsigned long sink;
static double cpu_now(void) {{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}}
__attribute__((noinline)) void spin(long n) {{ for (long i = 0; i < n; i++) sink += i; }}
__attribute__((noinline)) void work(long n) {{ spin(n); sink++; }}
int main(void) {{
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    double start = cpu_now();
    while (cpu_now() - start < 1.5) work(1000000);
    return binary_id[0] == 0;
}}
"#
        );
        let src = dir.path().join(format!("main{b}.c"));
        std::fs::write(&src, main).unwrap();
        let bin = dir.path().join(format!("evict{b}"));
        let ok = Command::new(&gcc)
            .args(["-O2", "-fomit-frame-pointer", "-o"])
            .arg(&bin)
            .arg(&src)
            .arg(dir.path().join("big.o"))
            .status()
            .unwrap();
        assert!(ok.success());
        bins.push(bin);
    }
    let mut workloads: Vec<Workload> = (0..BINARIES * PER_BINARY)
        .map(|i| Workload::spawn(&bins[i % BINARIES], &[]))
        .collect();
    let pids: Vec<u32> = workloads.iter().map(Workload::pid).collect();
    let targets = pids
        .iter()
        .map(|&pid| pid_target(pid, "evict"))
        .collect::<Vec<_>>();

    let recorder = Arc::new(Recorder::default());
    let mut registry = Registry::default();
    let budget_mib = 1;
    let (handle, run) = Collector::builder(EbpfConfig {
        collect_interval: Duration::from_secs(3),
        unwind_tables_memory_mib: budget_mib,
        ..EbpfConfig::default()
    })
    .targets(targets)
    .forward_to([recorder.clone() as DynReceiver])
    .with_metrics(EbpfMetrics::register(&mut registry))
    .build()
    .unwrap();
    let task = tokio::spawn(run);
    for w in &mut workloads {
        w.go();
    }
    let mut max_bytes = 0f64;
    let mut kernel = None;
    let mut profiles = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        max_bytes = max_bytes.max(metric(&text, "pyroscope_ebpf_unwind_table_bytes"));
        kernel = kernel.or_else(bpftool_bytes);
        profiles.extend(recorder.take());
        if workloads.iter_mut().all(Workload::exited) {
            break;
        }
    }
    for w in workloads {
        let _ = w.wait();
    }
    handle
        .shutdown(std::time::Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    task.await.unwrap();
    profiles.extend(recorder.take());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let loaded = metric(&text, "pyroscope_ebpf_unwind_tables_loaded_total");
    let evicted = metric(&text, "pyroscope_ebpf_unwind_tables_evicted_total");
    let budget = f64::from(budget_mib) * 1048576.0;
    let kernel = kernel.expect("bpftool map show") as f64;
    eprintln!(
        "tables loaded {loaded}, evicted {evicted}; most table bytes {max_bytes}; bpftool \
         bytes_memlock of the unwinder's maps {kernel}; budget {budget}; {} profiles",
        profiles.len()
    );
    assert!(evicted >= 1.0, "no eviction:\n{text}");
    assert!(
        max_bytes > 0.0 && max_bytes <= budget,
        "{max_bytes} > {budget}"
    );
    assert!(
        max_bytes <= kernel,
        "metric {max_bytes} above the maps' memory {kernel}"
    );
    // The maps are sized from the budget (and preallocated): a little slack for map headers.
    assert!(
        kernel <= budget * 1.05,
        "maps hold {kernel} B for a {budget} B budget"
    );
    for pid in pids {
        assert!(
            profile_of(&profiles, pid).is_some(),
            "no profile for process {pid}"
        );
    }
}
