//! Container-id targets: a process placed in a cgroup whose path holds a 64-hex id is profiled
//! with `__container_id__` set; a process outside it is not.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use pyro_core::{Labels, Target};
use pyro_ebpf::EbpfConfig;

/// Where to create a cgroup: the cgroup v2 mount if there is one (pure v2 at /sys/fs/cgroup, or
/// the hybrid layout's /sys/fs/cgroup/unified), else a v1 hierarchy.
fn cgroup_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let find = |fs: &str| {
        mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == fs)
            .map(|f| PathBuf::from(f[1]))
    };
    find("cgroup2")
        .or_else(|| find("cgroup"))
        .expect("a cgroup filesystem is mounted")
}

/// A cgroup that removes itself (after moving its processes back to the root cgroup).
struct Cgroup {
    root: PathBuf,
    path: PathBuf,
}

impl Cgroup {
    fn create(root: &Path, name: &str) -> Self {
        let path = root.join(name);
        std::fs::create_dir(&path).unwrap();
        Self {
            root: root.to_owned(),
            path,
        }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[test]
fn container_id_target_matches_only_processes_in_the_container() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (Some(inside_bin), Some(outside_bin)) = (
        compile_c(dir.path(), "incontainer", &spinner_source("inside")),
        compile_c(dir.path(), "outside", &spinner_source("outside")),
    ) else {
        return;
    };
    let id = format!("{:016x}", std::process::id()).repeat(4);
    assert_eq!(id.len(), 64);
    // The systemd/containerd layout: `<runtime>-<id>.scope`.
    let cgroup = Cgroup::create(&cgroup_root(), &format!("pyro-test-{id}.scope"));

    let mut inside = Workload::spawn(&inside_bin, &["2"]);
    let mut outside = Workload::spawn(&outside_bin, &["2"]);
    cgroup.add(inside.pid());
    let cgroup_file = std::fs::read_to_string(format!("/proc/{}/cgroup", inside.pid())).unwrap();
    assert!(cgroup_file.contains(&id), "{cgroup_file}");

    let target = Target::new(Labels::from_iter([
        // Kubernetes style, with the runtime prefix the collector strips.
        (
            "__meta_kubernetes_pod_container_id",
            format!("containerd://{id}").as_str(),
        ),
        ("__meta_kubernetes_namespace", "shop"),
        ("__meta_kubernetes_pod_container_name", "cart"),
    ]));
    let mut collector = collector(EbpfConfig::default(), vec![target]);
    inside.go();
    outside.go();
    poll_until(&mut collector, Duration::from_secs(60), || {
        inside.exited() && outside.exited()
    });
    let outside_pid = outside.pid();
    inside.wait();
    outside.wait();
    let profiles = collector.collect();
    drop(cgroup);

    let cid_profiles: Vec<_> = profiles
        .iter()
        .filter(|p| p.labels.get("__container_id__") == Some(id.as_str()))
        .collect();
    assert!(!cid_profiles.is_empty(), "no profile with the container id");
    let mut saw_inside = false;
    for p in &cid_profiles {
        assert_eq!(p.labels.get("service_name"), Some("ebpf/shop/cart"));
        assert_eq!(p.labels.get("__name__"), Some("process_cpu"));
        assert!(p.labels.get("__meta_kubernetes_namespace").is_none());
        check_with_go_pprof(p, dir.path());
        saw_inside |= has_path(p, &["incontainer", "main", "work_inside", "spin_inside"]);
        assert!(!has_path(p, &["spin_outside"]));
    }
    assert!(saw_inside, "the process in the container was not profiled");
    // Nothing else was profiled: every profile is the container's.
    assert_eq!(cid_profiles.len(), profiles.len());
    assert!(
        profiles.iter().all(|p| !has_path(p, &["outside"])),
        "process {outside_pid} outside the container was profiled"
    );
}
