//! A process in its own mount namespace, running a binary that exists only there (on a
//! private tmpfs), is symbolized: its files are read through `/proc/PID/root`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use pyro_ebpf::EbpfConfig;

#[test]
fn binary_visible_only_in_a_private_mount_namespace_is_symbolized() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (Some(bin), Some(unshare)) = (
        compile_c(dir.path(), "nsbuild", &spinner_source("namespaced")),
        pyro_testkit::tool("unshare"),
    ) else {
        return;
    };
    // An empty directory both namespaces see; only the new one mounts a tmpfs on it.
    let mountpoint = dir.path().join("private");
    std::fs::create_dir(&mountpoint).unwrap();
    let script = format!(
        "mount -t tmpfs pyro-test {mp} && cp {bin} {mp}/nsonly && rm {bin} && exec {mp}/nsonly 3",
        mp = mountpoint.display(),
        bin = bin.display(),
    );
    let mut workload = Workload::spawn_cmd(
        Command::new(unshare)
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script),
    );
    let pid = workload.pid();
    // Wait for the exec: then /proc/PID/exe is the binary on the private tmpfs.
    let exe = format!("{}/nsonly", mountpoint.display());
    for _ in 0..100 {
        let now = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if now.to_string_lossy() == exe {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !bin.exists(),
        "the binary still exists outside the namespace"
    );
    assert!(
        !mountpoint.join("nsonly").exists(),
        "the binary is visible outside the namespace"
    );

    let mut collector = collector(EbpfConfig::default(), vec![pid_target(pid, "namespaced")]);
    workload.go();
    poll_until(&mut collector, Duration::from_secs(60), || {
        workload.exited()
    });
    workload.wait();
    let profiles = collector.collect();
    let p = profile_of(&profiles, pid).expect("a profile of the namespaced process");
    check_with_go_pprof(p, dir.path());
    assert!(
        has_path(p, &["nsonly", "main", "work_namespaced", "spin_namespaced"]),
        "{:?}",
        stacks(p)
    );
}
