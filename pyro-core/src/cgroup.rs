//! Container ids from `/proc/<pid>/cgroup`, shared by process discovery and the eBPF collector
//! so both find the same container for a process.

use std::sync::LazyLock;

use regex::Regex;

/// Alloy's `cgroupContainerIDRe`, `^.*/(?:.*-)?([0-9a-f]{64})(?:\.|\s*$)`, with Go's ASCII `\s`
/// written out.
static CONTAINER_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^.*/(?:.*-)?([0-9a-f]{64})(?:\.|[\t\n\x0C\r ]*$)")
        .expect("a constant pattern, covered by the tests")
});

/// The container id in the contents of a `/proc/<pid>/cgroup` file: the 64-hex-digit id of the
/// first line matching `^.*/(?:.*-)?([0-9a-f]{64})(?:\.|\s*$)` — the rule of Alloy's
/// `discovery.process` and Pyroscope's eBPF target finder. It covers `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope` (systemd driver) and
/// `/kubepods/…/pod…/<id>`, `/docker/<id>` (cgroupfs driver), in cgroup v1 and v2.
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
        CONTAINER_ID
            .captures(line)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2fc8e2d6d5a0e6e6b9b8b5c3a1b1c6e0f2d1b7a9e4c3d2b1a0f9e8d7c6b5a4f3";

    // Cases from Pyroscope's `ebpf/sd/target_test.go` layouts (systemd and cgroupfs drivers,
    // Kubernetes and plain Docker), rebuilt here with our own id.
    #[test]
    fn runtimes_and_drivers() {
        let lines = [
            format!("0::/system.slice/docker-{ID}.scope"),
            format!(
                "12:cpuset:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7e4e.slice/cri-containerd-{ID}.scope"
            ),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crio-{ID}.scope"
            ),
            format!("11:devices:/kubepods/burstable/pod4e8f1c2a-0000-4000-8000-000000000000/{ID}"),
            format!("4:memory:/docker/{ID}"),
            format!("0::/docker/{ID}  "),
            format!("0::/system.slice/crio-conmon-{ID}.scope"),
        ];
        for l in &lines {
            assert_eq!(container_id_from_cgroup(l), Some(ID), "{l}");
        }
    }

    #[test]
    fn no_container() {
        for l in [
            "0::/user.slice/user-0.slice/session-1.scope",
            "0::/",
            "",
            // 63 hex digits, and 64 that are not lower-case hex.
            "0::/docker/2fc8e2d6d5a0e6e6b9b8b5c3a1b1c6e0f2d1b7a9e4c3d2b1a0f9e8d7c6b5a4f",
            "0::/docker/2FC8E2D6D5A0E6E6B9B8B5C3A1B1C6E0F2D1B7A9E4C3D2B1A0F9E8D7C6B5A4F3",
            // Followed by something else than `.` or the end.
            "0::/docker/2fc8e2d6d5a0e6e6b9b8b5c3a1b1c6e0f2d1b7a9e4c3d2b1a0f9e8d7c6b5a4f3/init",
        ] {
            assert_eq!(container_id_from_cgroup(l), None, "{l}");
        }
    }

    #[test]
    fn first_matching_line_wins() {
        let other = "a".repeat(64);
        let file = format!("2:cpu:/\n1:memory:/docker/{other}\n0::/docker/{ID}\n");
        assert_eq!(container_id_from_cgroup(&file), Some(other.as_str()));
    }
}
