//! Process discovery against processes the tests start: a plain child, one in a new mount
//! namespace (`unshare -m`), and one placed in a cgroup whose path holds a container id. The
//! last two need root and are gated like the eBPF tests (`pyro_testkit::bpf_available`, which
//! fails instead of skipping when `PYRO_REQUIRE_BPF=1`).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use pyro_core::{Discoverer, Target};
use pyro_discovery::process::{
    DiscoverConfig, LABEL_CGROUP_PATH, LABEL_COMMANDLINE, LABEL_CWD, LABEL_EXE, ProcessDiscoverer,
    ProcessDiscoveryConfig, scan,
};

/// Kills and reaps the child when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(targets: &[Target], pid: u32) -> &Target {
    targets
        .iter()
        .find(|t| t.pid() == Some(pid))
        .unwrap_or_else(|| panic!("pid {pid} not discovered"))
}

fn sleep_path() -> PathBuf {
    let sleep = pyro_testkit::tool("sleep").expect("coreutils sleep");
    fs::canonicalize(sleep).unwrap()
}

/// Waits (bounded) until `cond` holds: a freshly spawned child needs a moment to exec.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn exe_of(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether `pid` has finished exec'ing `sleep <arg>`: the exe link and the argument area change
/// at slightly different moments, so wait for both.
fn is_sleep(pid: u32, arg: &str) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    exe_of(pid).as_deref() == Some(sleep_path().as_path())
        && cmdline.ends_with(format!("{arg}\0").as_bytes())
}

#[test]
fn discovers_a_child_process() {
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = fs::canonicalize(cwd.path()).unwrap();
    let child = Reaped(
        Command::new(sleep_path())
            .arg("3600")
            .current_dir(&cwd_path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    wait_for("exec", || is_sleep(pid, "3600"));

    let config = ProcessDiscoveryConfig {
        discover_config: DiscoverConfig {
            uid: true,
            username: true,
            cgroup_path: true,
            ..DiscoverConfig::default()
        },
        ..ProcessDiscoveryConfig::default()
    };
    let targets = scan(&config).unwrap();
    let t = find(&targets, pid);
    let l = t.labels();
    assert_eq!(l.get(LABEL_EXE), sleep_path().to_str());
    assert_eq!(l.get(LABEL_CWD), cwd_path.to_str());
    let commandline = format!("{} 3600", sleep_path().display());
    assert_eq!(l.get(LABEL_COMMANDLINE), Some(commandline.as_str()));
    // The uid the kernel reports for this test process, read independently of the scanner.
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(l.get("__meta_process_uid"), Some(uid));
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        l.get(LABEL_CGROUP_PATH),
        Some(cgroup.trim_end().replace('\n', "|").as_str())
    );
    // This very test process is there too.
    find(&targets, std::process::id());

    // The discoverer's first item is the same scan.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = rt.block_on(async {
        ProcessDiscoverer::new(ProcessDiscoveryConfig::default())
            .subscribe()
            .next()
            .await
            .unwrap()
    });
    assert_eq!(
        find(&first, pid).labels().get(LABEL_COMMANDLINE),
        Some(commandline.as_str())
    );
}

#[test]
fn discovers_a_process_in_another_mount_namespace() {
    if !pyro_testkit::bpf_available() {
        return;
    }
    let Some(unshare) = pyro_testkit::tool("unshare") else {
        return;
    };
    let child = Reaped(
        Command::new(unshare)
            .args(["--mount", "--"])
            .arg(sleep_path())
            .arg("3601")
            .current_dir("/")
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    wait_for("unshare to exec sleep", || is_sleep(pid, "3601"));
    // The set-up is what the test claims: a different mount namespace.
    assert_ne!(ns(&pid.to_string()), ns("self"));

    let targets = scan(&ProcessDiscoveryConfig::default()).unwrap();
    let l = find(&targets, pid).labels();
    assert_eq!(l.get(LABEL_EXE), sleep_path().to_str());
    assert_eq!(l.get(LABEL_CWD), Some("/"));
    let commandline = format!("{} 3601", sleep_path().display());
    assert_eq!(l.get(LABEL_COMMANDLINE), Some(commandline.as_str()));
}

/// A cgroup directory removed when dropped (after the processes in it are gone).
struct CgroupDir(PathBuf);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        for _ in 0..100 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<_> = l.split_whitespace().collect();
        (f.len() >= 3 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

#[test]
fn discovers_the_container_id_of_a_process_in_a_container_cgroup() {
    if !pyro_testkit::bpf_available() {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        assert!(
            !pyro_testkit::bpf_required(),
            "no cgroup2 mount in /proc/self/mounts"
        );
        eprintln!("SKIPPED: no cgroup v2 mount");
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{:032x}{:032x}", std::process::id(), nanos);
    assert_eq!(id.len(), 64);
    let path = mount.join(format!("docker-{id}.scope"));
    if let Err(e) = fs::create_dir(&path) {
        // A read-only cgroupfs (a container without cgroup write access) cannot host the test.
        assert!(
            !pyro_testkit::bpf_required(),
            "cannot create {}: {e}",
            path.display()
        );
        eprintln!("SKIPPED: cannot create {}: {e}", path.display());
        return;
    }
    let dir = CgroupDir(path);

    let child = Reaped(Command::new(sleep_path()).arg("3602").spawn().unwrap());
    let pid = child.0.id();
    wait_for("exec", || is_sleep(pid, "3602"));
    fs::write(dir.0.join("cgroup.procs"), pid.to_string()).unwrap();
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup.contains(&id), "set-up failed: {cgroup}");

    let config = ProcessDiscoveryConfig {
        discover_config: DiscoverConfig {
            cgroup_path: true,
            ..DiscoverConfig::default()
        },
        ..ProcessDiscoveryConfig::default()
    };
    let targets = scan(&config).unwrap();
    let t = find(&targets, pid);
    assert_eq!(t.labels().get("__container_id__"), Some(id.as_str()));
    assert_eq!(t.container_id(), Some(id.as_str()));
    assert!(
        t.labels()
            .get(LABEL_CGROUP_PATH)
            .is_some_and(|p| p.contains(&format!("/docker-{id}.scope"))),
        "{}",
        t.labels()
    );
    drop(child);
    drop(dir);
}

/// A process whose binary is deleted, then replaced by a new file at the same path, after it
/// started: `__meta_process_exe` keeps the kernel's ` (deleted)` suffix, as Alloy's (gopsutil's
/// plain `readlink`) does, and the documented relabel rule names it after the binary.
#[test]
fn a_process_whose_binary_was_deleted_or_replaced() {
    use pyro_discovery::relabel::{RelabelConfig, RelabelRules, relabel_targets};

    let dir = tempfile::tempdir().unwrap();
    let exe = fs::canonicalize(dir.path())
        .unwrap()
        .join("pyro_gone_sleep");
    fs::copy(sleep_path(), &exe).unwrap();
    let child =
        Reaped(pyro_testkit::spawn(Command::new(&exe).arg("3602").stdout(Stdio::null())).unwrap());
    let pid = child.0.id();
    wait_for("exec", || exe_of(pid).as_deref() == Some(exe.as_path()));
    let rules = RelabelRules::new(&[RelabelConfig {
        source_labels: vec![LABEL_EXE.into()],
        regex: r".*/(.*?)(?: \(deleted\))?".into(),
        target_label: "service_name".into(),
        ..RelabelConfig::default()
    }])
    .unwrap();
    let deleted = format!("{} (deleted)", exe.display());

    fs::remove_file(&exe).unwrap();
    // What the kernel itself says, read independently of the scanner.
    assert_eq!(exe_of(pid), Some(PathBuf::from(&deleted)));
    let check = || {
        let targets = scan(&ProcessDiscoveryConfig::default()).unwrap();
        assert_eq!(
            find(&targets, pid).labels().get(LABEL_EXE),
            Some(deleted.as_str())
        );
        let named = relabel_targets(&rules, targets);
        assert_eq!(
            find(&named, pid).labels().get("service_name"),
            Some("pyro_gone_sleep")
        );
    };
    check();
    // A new binary at the old path (an upgrade): the running process still has the old one.
    fs::copy(sleep_path(), &exe).unwrap();
    check();
}
