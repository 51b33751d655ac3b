//! JIT code named from the runtime's perf map: a Node.js process started with
//! `--perf-basic-prof` spends nearly all its CPU in one JavaScript function; that name carries
//! most of its profile.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use pyro_ebpf::EbpfConfig;

/// About 4 s of CPU in `hotLoopPyro`, after waiting for a line on stdin.
const SCRIPT: &str = r#"
function hotLoopPyro(n) {
    let s = 0;
    for (let i = 0; i < n; i++) s = (s * 31 + i) % 1000003;
    return s;
}
process.stdin.once("data", () => {
    const end = Date.now() + 4000;
    let t = 0;
    while (Date.now() < end) t += hotLoopPyro(1e5);
    if (t === -1) console.log(t);
    process.exit(0);
});
"#;

#[test]
fn node_perf_basic_prof_function_carries_its_share() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let Some(node) = pyro_testkit::tool("node") else {
        return;
    };
    // (In a scratch directory: V8 may write `isolate-*-v8.log` files into its working directory.)
    let cwd = tempfile::tempdir().unwrap();
    let mut workload = Workload::spawn_cmd(
        Command::new(node)
            .args(["--perf-basic-prof", "-e", SCRIPT])
            .current_dir(cwd.path()),
    );
    let pid = workload.pid();
    let mut c = collector(EbpfConfig::default(), vec![pid_target(pid, "node")]);
    workload.go();
    poll_until(&mut c, Duration::from_secs(60), || workload.exited());
    let profiles = c.collect();
    let p = profile_of(&profiles, pid).expect("a profile of the node process");
    let dir = tempfile::tempdir().unwrap();
    check_with_go_pprof(p, dir.path());
    let stacks = stacks(p);
    let total: i64 = stacks.iter().map(|s| s.value).sum();
    let hot: i64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.contains("hotLoopPyro")))
        .map(|s| s.value)
        .sum();
    let share = 100.0 * hot as f64 / total.max(1) as f64;
    eprintln!("hotLoopPyro in {share:.1}% of {total} ns");
    assert!(share >= 50.0, "hotLoopPyro in {share:.1}%: {stacks:#?}");
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
}
