//! Ground truth: a C workload splits its CPU time between three leaf functions on known call
//! paths, measures that split itself with the thread CPU clock, and the collector's profile must
//! agree within ±3 percentage points, show the full path from `main`, and hold ≥ 95 % of the
//! samples the workload's CPU time implies.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use pyro_ebpf::EbpfConfig;

const WORKLOAD: &str = r#"
#include <stdio.h>
#include <time.h>

volatile unsigned long sink;
static double spent[3];

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The local makes gcc give the leaf a frame (see compile_c). */
#define LEAF(name) \
    __attribute__((noinline)) void name(long n) { \
        volatile long acc = 0; \
        for (long i = 0; i < n; i++) acc += i; \
        sink += acc; \
    }
LEAF(leaf_alpha)
LEAF(leaf_beta)
LEAF(leaf_gamma)

__attribute__((noinline)) void path_alpha(long n) { leaf_alpha(n); }
__attribute__((noinline)) void mid_beta(long n) { leaf_beta(n); }
__attribute__((noinline)) void path_beta(long n) { mid_beta(n); }
__attribute__((noinline)) void path_gamma(long n) { leaf_gamma(n); }

int main(int argc, char **argv) {
    double seconds = 12;
    if (argc > 1) sscanf(argv[1], "%lf", &seconds);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    const long unit = 2000000;
    double start = cpu_now(), t;
    while (cpu_now() - start < seconds) {
        t = cpu_now(); path_alpha(1 * unit); spent[0] += cpu_now() - t;
        t = cpu_now(); path_beta(2 * unit);  spent[1] += cpu_now() - t;
        t = cpu_now(); path_gamma(3 * unit); spent[2] += cpu_now() - t;
    }
    printf("%f %f %f %f\n", spent[0], spent[1], spent[2], cpu_now() - start);
    return 0;
}
"#;

#[test]
fn leaf_shares_paths_and_sample_count_match_the_truth() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = compile_c(dir.path(), "ground_truth", WORKLOAD) else {
        return;
    };
    let mut workload = Workload::spawn(&bin, &["20"]);
    let pid = workload.pid();
    let mut collector = collector(EbpfConfig::default(), vec![pid_target(pid, "ground-truth")]);
    workload.go();
    poll_until(&mut collector, Duration::from_secs(60), || {
        workload.exited()
    });
    let out = workload.wait();
    let profiles = collector.collect();

    let truth: Vec<f64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    let (spent, cpu_seconds) = (&truth[..3], truth[3]);
    let spent_total: f64 = spent.iter().sum();

    let profile = profile_of(&profiles, pid).expect("a profile for the workload");
    check_with_go_pprof(profile, dir.path());
    let pprof = decode(profile);
    let period = pprof.period;
    assert_eq!(period, 1_000_000_000 / 97);
    let stacks = stacks(profile);
    let total: i64 = stacks.iter().map(|s| s.value).sum();
    let samples = total / period;

    let paths = [
        ["ground_truth", "main", "path_alpha", "leaf_alpha"].as_slice(),
        ["ground_truth", "main", "path_beta", "mid_beta", "leaf_beta"].as_slice(),
        ["ground_truth", "main", "path_gamma", "leaf_gamma"].as_slice(),
    ];
    let mut by_leaf: HashMap<usize, i64> = HashMap::new();
    let mut full_path: HashMap<usize, i64> = HashMap::new();
    for s in &stacks {
        for (i, path) in paths.iter().enumerate() {
            let leaf = path[path.len() - 1];
            if s.frames.last().map(String::as_str) == Some(leaf) {
                *by_leaf.entry(i).or_default() += s.value;
                // The process name is the root; then a libc start frame or two, then `main`.
                assert_eq!(s.frames[0], path[0], "root of {:?}", s.frames);
                let from_main = s.frames.iter().position(|f| f == "main");
                if from_main.is_some_and(|m| s.frames[m..] == path[1..]) {
                    *full_path.entry(i).or_default() += s.value;
                } else {
                    eprintln!(
                        "other path to {leaf}: {:?} x{}",
                        s.frames,
                        s.value / pprof.period
                    );
                }
            }
        }
    }
    let mut report = String::new();
    for (i, path) in paths.iter().enumerate() {
        let leaf_total = by_leaf.get(&i).copied().unwrap_or(0);
        let share = 100.0 * leaf_total as f64 / total as f64;
        let truth = 100.0 * spent[i] / spent_total;
        // A sample on the leaf's first instruction, before it pushes its frame pointer, skips
        // the caller: allow a few of those.
        let full = 100.0 * full_path.get(&i).copied().unwrap_or(0) as f64 / leaf_total as f64;
        report += &format!(
            "{}: profile {share:.2}% truth {truth:.2}%, full path from main in {full:.1}%\n",
            path[path.len() - 1]
        );
        assert!(full >= 95.0, "full path in only {full:.1}% of {path:?}");
        assert!(
            (share - truth).abs() <= 3.0,
            "{} share {share:.2}% vs truth {truth:.2}%",
            path[path.len() - 1]
        );
    }
    let expected = cpu_seconds * 97.0;
    report += &format!(
        "samples {samples}, expected {expected:.0} ({:.1}%), counters {:?}",
        100.0 * samples as f64 / expected,
        collector.kernel_counters()
    );
    eprintln!("{report}");
    assert!(
        samples as f64 >= 0.95 * expected,
        "only {samples} samples for {cpu_seconds:.2} CPU-seconds at 97 Hz"
    );
}
