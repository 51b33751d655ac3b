//! `__meta_process_cgroup_path` from `/proc/<pid>/cgroup`; the container id rule itself is
//! [`pyro_core::cgroup::container_id_from_cgroup`], shared with the eBPF collector.

/// Alloy's `__meta_process_cgroup_path`: every line of the cgroup file joined with `|` (one line
/// on cgroup v2, one per hierarchy on v1), or `None` when the file is empty.
pub fn cgroup_path(cgroup: &str) -> Option<String> {
    let joined = cgroup.lines().collect::<Vec<_>>().join("|");
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_joins_lines() {
        let file = "2:cpu:/\n1:memory:/docker/x\n0::/\n";
        assert_eq!(
            cgroup_path(file).unwrap(),
            "2:cpu:/|1:memory:/docker/x|0::/"
        );
        assert_eq!(cgroup_path(""), None);
    }
}
