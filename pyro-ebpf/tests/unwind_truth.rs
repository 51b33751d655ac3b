//! Ground truth for table-based unwinding: workloads without usable frame pointers (frameless
//! leaves, `-O2 -fomit-frame-pointer`, C++ `std::sort` comparators and a shared library, a Rust
//! release build) are profiled by the collector and, at the same time on the same process, by
//! `perf record --call-graph dwarf` (the reference). Each workload measures its own split of CPU
//! time between its leaves with the thread CPU clock. For every leaf the collector's share must
//! be within ±2 points of that split, and ≥ 99 % of its samples must carry a full path (from the
//! outermost frame, `_start`, to the leaf) that perf's DWARF view also shows.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use pyro_ebpf::EbpfConfig;

/// Samples per second for both profilers: enough samples in 12 s for a ±2 point check.
const RATE: u32 = 499;
/// Seconds of CPU each workload burns.
const SECONDS: &str = "12";

/// Three frameless leaves under known paths, as `-O1`/`-O2` C; prints its CPU split.
const C_WORKLOAD: &str = include_str!("unwind_workload.c");

const CXX_LIB: &str = r#"
volatile unsigned long lib_sink;
__attribute__((noinline)) void lib_leaf(long n) { for (long i = 0; i < n; i++) lib_sink += i; }
__attribute__((noinline)) void lib_work(long n) { lib_leaf(n); lib_sink++; }
"#;

const CXX_MAIN: &str = r#"
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <vector>
void lib_work(long n);
volatile unsigned long sink;
static double cpu_now() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
__attribute__((noinline)) bool cmp_leaf(int a, int b) {
    for (int i = 0; i < 3000; i++) sink += i;
    return a < b;
}
__attribute__((noinline)) void sort_work(std::vector<int> &v, unsigned &seed) {
    for (auto &x : v) { seed = seed * 1103515245u + 12345u; x = (int)(seed >> 8); }
    std::sort(v.begin(), v.end(), [](int a, int b) { return cmp_leaf(a, b); });
    sink++;
}
int main(int argc, char **argv) {
    double seconds = 12, t, spent[2] = {0, 0};
    if (argc > 1) std::sscanf(argv[1], "%lf", &seconds);
    char line[16];
    if (!std::fgets(line, sizeof line, stdin)) return 1;
    std::vector<int> v(300);
    unsigned seed = 1;
    double start = cpu_now();
    while (cpu_now() - start < seconds) {
        t = cpu_now(); sort_work(v, seed); spent[0] += cpu_now() - t;
        t = cpu_now(); lib_work(4000000); spent[1] += cpu_now() - t;
    }
    std::printf("%f %f\n", spent[0], spent[1]);
    return 0;
}
"#;

const RUST_WORKLOAD: &str = r#"
use std::hint::black_box;
#[repr(C)]
struct Timespec { sec: i64, nsec: i64 }
unsafe extern "C" { fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32; }
fn cpu_now() -> f64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    unsafe { clock_gettime(3, &mut ts) }; // CLOCK_THREAD_CPUTIME_ID
    ts.sec as f64 + ts.nsec as f64 / 1e9
}
#[inline(never)]
fn leaf_alpha(n: u64) -> u64 { let mut s = 0u64; for i in 0..n { s = black_box(s.wrapping_add(i)); } s }
#[inline(never)]
fn leaf_beta(n: u64) -> u64 { let mut s = 0u64; for i in 0..n { s = black_box(s ^ i); } s }
#[inline(never)]
fn mid_alpha(n: u64) -> u64 { black_box(leaf_alpha(black_box(n))).wrapping_add(1) }
#[inline(never)]
fn path_alpha(n: u64) -> u64 { black_box(mid_alpha(black_box(n))).wrapping_add(1) }
#[inline(never)]
fn path_beta(n: u64) -> u64 { black_box(leaf_beta(black_box(n))).wrapping_add(1) }
fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(12.0);
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let (mut spent, start) = ([0f64; 2], cpu_now());
    while cpu_now() - start < seconds {
        let t = cpu_now(); black_box(path_alpha(1_000_000)); spent[0] += cpu_now() - t;
        let t = cpu_now(); black_box(path_beta(2_000_000)); spent[1] += cpu_now() - t;
    }
    println!("{} {}", spent[0], spent[1]);
}
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles C/C++ `source` with `compiler` and `flags` into `dir/name`.
fn compile(
    dir: &Path,
    compiler: &str,
    name: &str,
    ext: &str,
    source: &str,
    flags: &[&str],
) -> Option<PathBuf> {
    let cc = pyro_testkit::tool(compiler)?;
    let src = dir.join(format!("{name}.{ext}"));
    std::fs::write(&src, source).unwrap();
    let bin = dir.join(name);
    run(Command::new(cc).args(flags).arg("-o").arg(&bin).arg(&src));
    Some(bin)
}

/// `perf record --call-graph dwarf` attached to `pid` (exits when the process does).
fn perf_record(pid: u32, out: &Path) -> Option<Child> {
    let perf = pyro_testkit::tool("perf")?;
    let child = Command::new(perf)
        .args(["record", "-q", "-e", "cpu-clock", "-F", &RATE.to_string()])
        .args(["--call-graph", "dwarf", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // perf needs a moment to attach before the workload starts.
    std::thread::sleep(Duration::from_millis(1500));
    Some(child)
}

/// perf's stacks (root first, names without `@VERSION`), one entry per sample.
fn perf_stacks(data: &Path) -> Vec<Vec<String>> {
    let out = Command::new("perf")
        .args([
            "script",
            "-F",
            "ip,sym",
            "--no-demangle",
            "--no-inline",
            "-i",
        ])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "perf script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stacks = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if !cur.is_empty() {
                cur.reverse();
                stacks.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let name = line.split_once(' ').map_or("[unknown]", |(_, s)| s.trim());
        cur.push(normalize(name));
    }
    if !cur.is_empty() {
        cur.reverse();
        stacks.push(cur);
    }
    stacks
}

/// A frame name without its symbol version or offset.
fn normalize(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    let name = name.split("+0x").next().unwrap_or(name);
    name.to_string()
}

/// A path with directly repeated frames (recursion) folded into one.
fn fold_recursion(frames: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(frames.len());
    for f in frames {
        if out.last() != Some(f) {
            out.push(f.clone());
        }
    }
    out
}

/// Profiles `bin` (which prints its per-leaf CPU seconds) with the collector and perf at once
/// and checks the collector against the split and against perf's paths.
fn check(bin: &Path, dir: &Path, leaves: &[&str]) {
    let perf_data = dir.join("perf.data");
    let mut workload = Workload::spawn(bin, &[SECONDS]);
    let pid = workload.pid();
    // The unwinder is compared with perf's DWARF unwinding, which names each physical frame
    // from the symbol table and shows no inlined functions: symbolize the same way (DWARF
    // names and inline frames are checked against binutils' addr2line in pyro-symbolize).
    let config = EbpfConfig {
        sample_rate: RATE,
        debug_info: false,
        ..EbpfConfig::default()
    };
    let mut collector = collector(config, vec![pid_target(pid, "unwind-truth")]);
    let Some(mut perf) = perf_record(pid, &perf_data) else {
        return;
    };
    workload.go();
    poll_until(&mut collector, Duration::from_secs(90), || {
        workload.exited()
    });
    let out = workload.wait();
    let profiles = collector.collect();
    let perf_status = perf.wait().unwrap();
    assert!(perf_status.success(), "perf record failed");
    let truth: Vec<f64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert_eq!(truth.len(), leaves.len(), "workload output {out:?}");
    let spent_total: f64 = truth.iter().sum();

    let profile = profile_of(&profiles, pid).expect("a profile of the workload");
    let ours = stacks(profile);
    let period = decode(profile).period;
    let total: i64 = ours.iter().map(|s| s.value).sum();

    let perf = perf_stacks(&perf_data);
    let leaf_of = |frames: &[String]| -> Option<usize> {
        let last = frames.last()?;
        leaves.iter().position(|l| last.contains(l))
    };
    let mut perf_paths: HashMap<usize, HashSet<Vec<String>>> = HashMap::new();
    let mut perf_by_leaf: HashMap<usize, usize> = HashMap::new();
    for s in &perf {
        if let Some(i) = leaf_of(s) {
            *perf_by_leaf.entry(i).or_default() += 1;
            perf_paths.entry(i).or_default().insert(fold_recursion(s));
        }
    }
    let mut report = format!(
        "{}: {} samples ({} by perf), counters {:?}\n",
        bin.display(),
        total / period,
        perf.len(),
        collector.kernel_counters()
    );
    let mut failures = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let mut leaf_total = 0i64;
        let mut matched = 0i64;
        let mut others: HashMap<Vec<String>, i64> = HashMap::new();
        for s in &ours {
            // The root is the process name.
            let frames: Vec<String> = s.frames[1..].iter().map(|f| normalize(f)).collect();
            if leaf_of(&frames) != Some(i) {
                continue;
            }
            leaf_total += s.value;
            let folded = fold_recursion(&frames);
            if perf_paths.get(&i).is_some_and(|p| p.contains(&folded)) {
                matched += s.value;
            } else {
                *others.entry(frames).or_default() += s.value / period;
            }
        }
        let share = 100.0 * leaf_total as f64 / total as f64;
        let truth_share = 100.0 * truth[i] / spent_total;
        let perf_share =
            100.0 * perf_by_leaf.get(&i).copied().unwrap_or(0) as f64 / perf.len().max(1) as f64;
        let same = 100.0 * matched as f64 / leaf_total.max(1) as f64;
        report += &format!(
            "  {leaf}: share {share:.2}% (truth {truth_share:.2}%, perf {perf_share:.2}%), \
             path as perf's in {same:.2}%\n"
        );
        let mut others: Vec<_> = others.into_iter().collect();
        others.sort_by_key(|(_, n)| -n);
        for (path, n) in others.iter().take(3) {
            report += &format!("    not in perf's paths x{n}: {path:?}\n");
        }
        if (share - truth_share).abs() > 2.0 {
            failures.push(format!(
                "{leaf}: share {share:.2}% vs truth {truth_share:.2}%"
            ));
        }
        if same < 99.0 {
            failures.push(format!("{leaf}: perf's path in only {same:.2}%"));
        }
    }
    if let Some(example) = perf.iter().find(|s| leaf_of(s).is_some()) {
        report += &format!("  a perf path: {example:?}\n");
    }
    eprintln!("{report}");
    assert!(failures.is_empty(), "{failures:?}\n{report}");
}

#[test]
fn c_o1_frame_pointers_with_frameless_leaves() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline"];
    let Some(bin) = compile(dir.path(), "gcc", "c_o1_fp", "c", C_WORKLOAD, &flags) else {
        return;
    };
    check(&bin, dir.path(), &["leaf_alpha", "leaf_beta", "leaf_gamma"]);
}

#[test]
fn c_o2_without_frame_pointers() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = ["-O2", "-g", "-fomit-frame-pointer", "-fno-inline"];
    let Some(bin) = compile(dir.path(), "gcc", "c_o2_nofp", "c", C_WORKLOAD, &flags) else {
        return;
    };
    check(&bin, dir.path(), &["leaf_alpha", "leaf_beta", "leaf_gamma"]);
}

#[test]
fn cxx_o2_sort_comparator_and_shared_library() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(lib) = compile(
        dir.path(),
        "g++",
        "libwork.so",
        "cc",
        CXX_LIB,
        &["-O2", "-g", "-fPIC", "-shared"],
    ) else {
        return;
    };
    let libdir = lib.parent().unwrap().to_str().unwrap().to_string();
    let rpath = format!("-Wl,-rpath,{libdir}");
    let libflag = format!("-L{libdir}");
    let flags = ["-O2", "-g", &libflag, &rpath, "-xc++"];
    let src = dir.path().join("sorter.cc");
    std::fs::write(&src, CXX_MAIN).unwrap();
    let bin = dir.path().join("sorter");
    let gxx = pyro_testkit::tool("g++").unwrap();
    run(Command::new(gxx)
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .arg("-lwork"));
    check(&bin, dir.path(), &["cmp_leaf", "lib_leaf"]);
}

#[test]
fn rust_release_without_frame_pointers() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(rustc) = pyro_testkit::tool("rustc") else {
        return;
    };
    let src = dir.path().join("rust_work.rs");
    std::fs::write(&src, RUST_WORKLOAD).unwrap();
    let bin = dir.path().join("rust_work");
    run(Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "-C",
            "opt-level=3",
            "-C",
            "debuginfo=1",
        ])
        .args(["-C", "force-frame-pointers=no", "-o"])
        .arg(&bin)
        .arg(&src));
    check(&bin, dir.path(), &["leaf_alpha", "leaf_beta"]);
}

const DLOPEN_LIB: &str = r#"
volatile unsigned long plugin_sink;
__attribute__((noinline)) void plugin_leaf(long n) { for (long i = 0; i < n; i++) plugin_sink += i; }
__attribute__((noinline)) void plugin_work(long n) { plugin_leaf(n); plugin_sink++; }
"#;

const DLOPEN_MAIN: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <time.h>
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
volatile unsigned long sink;
__attribute__((noinline)) void call_plugin(void (*work)(long)) { work(1000000); sink++; }
int main(int argc, char **argv) {
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    /* Work first, so the collector sees the process and loads its tables... */
    double t0 = cpu_now();
    while (cpu_now() - t0 < 2) sink++;
    /* ...then load the library. */
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    void (*work)(long) = (void (*)(long))dlsym(h, "plugin_work");
    double start = cpu_now();
    while (cpu_now() - start < 8) call_plugin(work);
    if (argc > 2) execv(argv[2], argv + 2);
    return 0;
}
"#;

/// A library `dlopen`ed after the collector first saw the process (built `-O2
/// -fomit-frame-pointer`, so frame pointers cannot walk out of it) is unwound from tables once
/// the process's mappings are re-read; then the process execs a program without frame pointers,
/// whose mappings are read again.
#[test]
fn dlopen_after_start_and_exec_are_unwound() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nofp = ["-O2", "-g", "-fomit-frame-pointer", "-fno-inline"];
    let lib_flags = [&nofp[..], &["-fPIC", "-shared"]].concat();
    let Some(lib) = compile(
        dir.path(),
        "gcc",
        "libplugin.so",
        "c",
        DLOPEN_LIB,
        &lib_flags,
    ) else {
        return;
    };
    let main_flags = [&nofp[..], &["-ldl"]].concat();
    let bin = compile(dir.path(), "gcc", "host", "c", DLOPEN_MAIN, &main_flags).unwrap();
    let after = compile(dir.path(), "gcc", "after_exec", "c", C_WORKLOAD, &nofp).unwrap();
    let (lib_s, after_s) = (lib.to_str().unwrap(), after.to_str().unwrap());
    let mut cmd = Command::new(&bin);
    cmd.args([lib_s, after_s, "6"]);
    let mut workload = Workload::spawn_cmd(&mut cmd);
    let pid = workload.pid();
    let mut collector = collector(EbpfConfig::default(), vec![pid_target(pid, "dlopen")]);
    workload.go();
    // The line the program run by exec waits for (written once the first was read).
    poll_until(&mut collector, Duration::from_secs(1), || false);
    workload.go();
    poll_until(&mut collector, Duration::from_secs(60), || {
        workload.exited()
    });
    let _ = workload.wait();
    let profiles = collector.collect();
    let profile = profile_of(&profiles, pid).expect("a profile of the workload");
    let period = decode(profile).period;
    let share = |leaf: &str, path: &[&str]| -> (i64, f64) {
        let mut all = 0;
        let mut full = 0;
        for s in stacks(profile) {
            if s.frames.last().map(String::as_str) != Some(leaf) {
                continue;
            }
            all += s.value;
            let names: Vec<&str> = s
                .frames
                .iter()
                .map(|f| f.split('@').next().unwrap())
                .collect();
            let from_start = names.first() == Some(&"_start") || names.get(1) == Some(&"_start");
            if from_start && names.ends_with(path) {
                full += s.value;
            }
        }
        (all / period, 100.0 * full as f64 / all.max(1) as f64)
    };
    let plugin = share(
        "plugin_leaf",
        &["main", "call_plugin", "plugin_work", "plugin_leaf"],
    );
    let exec = share("leaf_gamma", &["main", "path_gamma", "leaf_gamma"]);
    eprintln!(
        "plugin_leaf: {} samples, full path from _start in {:.1}%; after exec leaf_gamma: {} samples, {:.1}%; counters {:?}",
        plugin.0,
        plugin.1,
        exec.0,
        exec.1,
        collector.kernel_counters()
    );
    // Samples before the re-read (at most a second after dlopen / exec) fall back to frame
    // pointers, which cannot leave code built without them.
    assert!(plugin.0 > 500 && plugin.1 >= 80.0, "dlopen: {plugin:?}");
    assert!(exec.0 > 150 && exec.1 >= 70.0, "exec: {exec:?}");
}
