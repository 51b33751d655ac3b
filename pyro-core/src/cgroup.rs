//! Container ids from `/proc/<pid>/cgroup`, shared by process discovery and the eBPF collector
//! so both find the same container for a process.
//!
//! Each line of the file is `hierarchy-ID:controllers:path` (`man 7 cgroups`): one `0::/…` line
//! on cgroup v2, one line per hierarchy on v1, both on a hybrid host. The container runtimes put
//! a container's processes in a cgroup whose last path element carries the 64-hex-digit id:
//!
//! | Runtime, cgroup driver | Path (as `/proc/<pid>/cgroup` shows it from the host) |
//! |---|---|
//! | Docker, cgroupfs | `/docker/<id>` |
//! | Docker, systemd | `/system.slice/docker-<id>.scope` |
//! | podman, systemd (root / rootless) | `/machine.slice/libpod-<id>.scope`, `…/user@1000.service/user.slice/libpod-<id>.scope`, with crun's `/container` sub-cgroup on v2 |
//! | podman, cgroupfs | `/libpod_parent/libpod-<id>` |
//! | containerd (CRI), cgroupfs | `/kubepods/<qos>/pod<uid>/<id>` (no `<qos>` for Guaranteed pods) |
//! | containerd (CRI), systemd | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | CRI-O, cgroupfs / systemd | `/kubepods/<qos>/pod<uid>/crio-<id>`, `/kubepods.slice/…/crio-<id>.scope` (with `/container` under crun) |
//!
//! Sources: Docker's "Runtime metrics" page (cgroupfs `docker/<longid>`, systemd
//! `system.slice/docker-<longid>.scope`); the kubelet's `pkg/kubelet/cm/cgroup_manager_linux.go`
//! (`kubepods`, QoS and `pod<uid>` names, converted to `kubepods-besteffort-pod<uid>.slice` with
//! `-` in the uid escaped to `_` for systemd); containerd's CRI plugin (systemd cgroup path
//! `<parent>:cri-containerd:<id>`, which runc turns into `cri-containerd-<id>.scope`); CRI-O's
//! `internal/config/cgmgr` (`crio-<id>.scope`, and `crio-conmon-<id>.scope` for its monitor);
//! podman's `libpod/runtime_ctr.go` (`libpod-<id>.scope`, `libpod-conmon-<id>.scope`); crun's
//! `run.oci.systemd.subgroup` annotation (default `container` under podman/CRI-O on v2).

/// The container id in the contents of a `/proc/<pid>/cgroup` file, from the first line whose
/// path names a container (see the [module documentation](self) for the layouts).
///
/// On each line the path is read from its end: trailing sub-cgroups a runtime or the container
/// itself creates (crun's `container`, systemd's `init.scope` inside a container) are passed
/// over, and of nested containers (Docker in Docker, a kind node) the innermost wins, the one
/// whose id the inner runtime reports. A path element is a container id when, after dropping a
/// `.scope` suffix, it is 64 lower-case hex digits on its own or after a `<runtime>-` prefix
/// (`docker-`, `cri-containerd-`, `crio-`, `libpod-`, …).
///
/// This is Alloy's rule (`^.*/(?:.*-)?([0-9a-f]{64})(?:\.|\s*$)`, first matching line) widened
/// where Alloy misses real layouts — a process in a sub-cgroup of a cgroupfs-driver container
/// (`/docker/<id>/init`, `/kubepods/…/pod<uid>/<id>/container`) gets no id in Alloy, whose rule
/// needs a `.` or the end right after the id, and of nested containers Alloy takes whichever id
/// its greedy `.*` reaches first — and narrowed in one place: the runtime's monitor processes (`crio-conmon-<id>.scope`,
/// `libpod-conmon-<id>.scope`) run outside the container and are not given its id, where Alloy
/// would profile conmon under the container's name.
///
/// ```
/// use pyro_core::cgroup::container_id_from_cgroup;
///
/// let id = "8a8b2b5e0c1f4d7d9e3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";
/// let cgroup = format!("0::/system.slice/docker-{id}.scope\n");
/// assert_eq!(container_id_from_cgroup(&cgroup), Some(id));
/// assert_eq!(container_id_from_cgroup("0::/user.slice/user-0.slice/session-4.scope\n"), None);
/// ```
pub fn container_id_from_cgroup(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|line| {
        // `hierarchy:controllers:path`; the controllers never hold `:`, the path may.
        let mut parts = line.splitn(3, ':');
        let (_, _, path) = (parts.next()?, parts.next()?, parts.next()?);
        path.trim_end()
            .rsplit('/')
            .take(MAX_DEPTH)
            .find_map(container_id_of_element)
    })
}

/// How many path elements from the end are looked at: enough for nested containers plus the
/// sub-cgroups below them, few enough that a deep non-container path costs little.
const MAX_DEPTH: usize = 8;

/// The id in one path element: `<id>`, `<prefix>-<id>`, either with `.scope`.
fn container_id_of_element(element: &str) -> Option<&str> {
    let element = element.strip_suffix(".scope").unwrap_or(element);
    let (prefix, id) = match element.rsplit_once('-') {
        Some((prefix, id)) => (Some(prefix), id),
        None => (None, element),
    };
    if !is_container_id(id) {
        return None;
    }
    // conmon (CRI-O's and podman's monitor) lives next to, not in, the container.
    if prefix.is_some_and(|p| p == "conmon" || p.ends_with("-conmon")) {
        return None;
    }
    Some(id)
}

/// 64 lower-case hex digits: the id Docker, containerd, CRI-O and podman give a container.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether a `__meta_kubernetes_pod_container_id` value (`containerd://<id>`, `cri-o://<id>`,
/// `docker://<id>`, as the pod's `status.containerStatuses[].containerID` carries it) names the
/// container whose id [`container_id_from_cgroup`] found. A value with another or no runtime
/// prefix matches nothing, as in Alloy.
///
/// ```
/// use pyro_core::cgroup::kubernetes_container_id_matches;
///
/// let id = "8a8b2b5e0c1f4d7d9e3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";
/// assert!(kubernetes_container_id_matches(&format!("containerd://{id}"), id));
/// assert!(!kubernetes_container_id_matches(id, id));
/// ```
pub fn kubernetes_container_id_matches(meta_value: &str, cgroup_id: &str) -> bool {
    crate::target::strip_runtime_prefix(meta_value).is_some_and(|id| id == cgroup_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2fc8e2d6d5a0e6e6b9b8b5c3a1b1c6e0f2d1b7a9e4c3d2b1a0f9e8d7c6b5a4f3";

    fn id_of(file: &str) -> Option<&str> {
        container_id_from_cgroup(file)
    }

    // Docker: the "Runtime metrics" page of docs.docker.com names `/docker/<longid>` (cgroupfs)
    // and `/system.slice/docker-<longid>.scope` (systemd). The v1 file is the shape of a
    // Debian host's (neuvector's `share/system/cgroup_test.go` TestDockerIDCentOS/Debian).
    #[test]
    fn docker() {
        let v1_cgroupfs = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n2:cpu,cpuacct:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"
        );
        let v1_systemd = format!(
            "10:devices:/system.slice/docker-{ID}.scope\n2:cpuacct,cpu:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope\n"
        );
        let v2_systemd = format!("0::/system.slice/docker-{ID}.scope\n");
        let v2_cgroupfs = format!("0::/docker/{ID}\n");
        // A container running systemd (`--cgroupns=private`, `/sbin/init`) moves its
        // processes below its own cgroup.
        let v2_nested = format!("0::/system.slice/docker-{ID}.scope/init.scope\n");
        // The same under the cgroupfs driver (Alloy's rule gives no id here).
        let cgroupfs_nested = format!("0::/docker/{ID}/init\n");
        // Go's `\s*$` in Alloy's rule tolerates trailing blanks; so do we.
        let trailing = format!("0::/docker/{ID}  \n");
        for f in [
            v1_cgroupfs,
            v1_systemd,
            v2_systemd,
            v2_cgroupfs,
            v2_nested,
            cgroupfs_nested,
            trailing,
        ] {
            assert_eq!(id_of(&f), Some(ID), "{f}");
        }
    }

    // podman: `libpod-<id>.scope` under machine.slice (root) or the user's user.slice
    // (rootless), crun's `container` sub-cgroup on v2 (`run.oci.systemd.subgroup`), and
    // `/libpod_parent/libpod-<id>` with the cgroupfs manager (podman's `libpod/runtime_ctr.go`).
    #[test]
    fn podman() {
        for f in [
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("0::/machine.slice/libpod-{ID}.scope\n"),
            format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
            ),
            format!("0::/libpod_parent/libpod-{ID}\n"),
            format!("11:memory:/machine.slice/libpod-{ID}.scope\n"),
        ] {
            assert_eq!(id_of(&f), Some(ID), "{f}");
        }
    }

    // Kubernetes: the kubelet's cgroup names (pkg/kubelet/cm/cgroup_manager_linux.go, pod
    // uids with `-` escaped to `_` in systemd slice names) with the runtimes' leaf names:
    // containerd's CRI plugin (`cri-containerd-<id>.scope` under systemd, `<id>` under
    // cgroupfs) and CRI-O (`crio-<id>.scope`, `crio-<id>`).
    #[test]
    fn kubernetes() {
        let uid = "7e4e2b1c-8d2f-4b6a-9c1e-3f5a7b9d1e2f";
        let suid = uid.replace('-', "_");
        for f in [
            // containerd, systemd driver, v1 and v2.
            format!(
                "12:cpuset:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{suid}.slice/cri-containerd-{ID}.scope\n"
            ),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{suid}.slice/cri-containerd-{ID}.scope\n"
            ),
            // Guaranteed pods have no QoS level.
            format!("0::/kubepods.slice/kubepods-pod{suid}.slice/cri-containerd-{ID}.scope\n"),
            // containerd, cgroupfs driver.
            format!("11:devices:/kubepods/burstable/pod{uid}/{ID}\n"),
            format!("0::/kubepods/besteffort/pod{uid}/{ID}\n"),
            format!("0::/kubepods/pod{uid}/{ID}\n"),
            // CRI-O, systemd (with crun's sub-cgroup) and cgroupfs.
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{suid}.slice/crio-{ID}.scope\n"
            ),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{suid}.slice/crio-{ID}.scope/container\n"
            ),
            format!("0::/kubepods/burstable/pod{uid}/crio-{ID}\n"),
            // A kind node: the pod's container inside the node's Docker container; the inner
            // id is the one the pod object carries.
            format!(
                "0::/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{suid}.slice/cri-containerd-{ID}.scope\n",
                "e".repeat(64)
            ),
        ] {
            assert_eq!(id_of(&f), Some(ID), "{f}");
        }
    }

    #[test]
    fn no_container() {
        let uid = "7e4e2b1c_8d2f_4b6a_9c1e_3f5a7b9d1e2f";
        for f in [
            "0::/user.slice/user-0.slice/session-1.scope".to_owned(),
            "0::/".to_owned(),
            String::new(),
            "garbage without colons".to_owned(),
            // The pod's own cgroup (pause process accounting), not a container.
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice"
            ),
            // 63 hex digits, and 64 that are not lower-case hex.
            format!("0::/docker/{}", &ID[..63]),
            format!("0::/docker/{}", ID.to_uppercase()),
            // The runtimes' monitor processes are beside the container, not in it.
            format!("0::/system.slice/crio-conmon-{ID}.scope"),
            format!("0::/machine.slice/libpod-conmon-{ID}.scope"),
        ] {
            assert_eq!(id_of(&f), None, "{f}");
        }
    }

    #[test]
    fn first_matching_line_wins() {
        let other = "a".repeat(64);
        let file = format!("2:cpu:/\n1:memory:/docker/{other}\n0::/docker/{ID}\n");
        assert_eq!(id_of(&file), Some(other.as_str()));
    }

    #[test]
    fn kubernetes_ids() {
        for prefix in ["containerd://", "cri-o://", "docker://"] {
            assert!(kubernetes_container_id_matches(
                &format!("{prefix}{ID}"),
                ID
            ));
        }
        assert!(!kubernetes_container_id_matches(&format!("rkt://{ID}"), ID));
        assert!(!kubernetes_container_id_matches(ID, ID));
        assert!(!kubernetes_container_id_matches("containerd://", ""));
        assert!(!kubernetes_container_id_matches(
            &format!("containerd://{ID}"),
            &"a".repeat(64)
        ));
    }
}
