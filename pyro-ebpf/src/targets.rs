//! Matching processes to targets: by `__process_pid__`, else by the container id read from
//! `/proc/PID/cgroup`, and the labels each matched profile carries.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use pyro_core::cgroup::container_id_from_cgroup;
use pyro_core::labels::names;
use pyro_core::target::infer_service_name;
use pyro_core::{Labels, Target};

/// The `__name__` of the profiles this collector makes.
pub const PROFILE_NAME: &str = "process_cpu";

/// A target as the collector uses it: the labels its profiles carry.
#[derive(Debug)]
pub(crate) struct ResolvedTarget {
    /// Profile labels: the target's labels without reserved ones (`__name__` kept), plus
    /// `service_name`, `__name__` and `__container_id__`/`__process_pid__`.
    pub(crate) labels: Labels,
    /// The `service_name` label.
    pub(crate) service_name: String,
    /// Identifies the label set (to keep profiles of different targets apart).
    pub(crate) fingerprint: u64,
}

impl ResolvedTarget {
    fn new(target: &Target, matched_by: Option<(&str, &str)>) -> Self {
        let service_name = infer_service_name(target.labels()).into_owned();
        let mut labels = target.labels().clone();
        labels.retain(|l| {
            !l.name().starts_with(names::RESERVED_PREFIX) || l.name() == names::METRIC_NAME
        });
        labels.set_if_absent(names::SERVICE_NAME, service_name.clone());
        labels.set_if_absent(names::METRIC_NAME, PROFILE_NAME);
        if let Some((name, value)) = matched_by {
            labels.set(name, value);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        labels.hash(&mut h);
        Self {
            service_name,
            fingerprint: h.finish(),
            labels,
        }
    }
}

/// The current targets, indexed by pid and by container id. Later targets with the same key
/// replace earlier ones, as in Alloy.
#[derive(Debug, Default)]
pub(crate) struct TargetIndex {
    by_pid: HashMap<u32, Arc<ResolvedTarget>>,
    by_container: HashMap<String, Arc<ResolvedTarget>>,
    /// The target of processes matching none (`targets_only = false`).
    default: Option<Arc<ResolvedTarget>>,
}

/// `service_name` of the profiles of processes matching no target when `targets_only` is
/// false, as Alloy names it.
pub const DEFAULT_SERVICE_NAME: &str = "ebpf/unspecified";

impl TargetIndex {
    /// The index of `targets`, with Alloy's default target for every other process when
    /// `targets_only` is false.
    pub(crate) fn with_default(targets: &[Target], targets_only: bool) -> Self {
        let mut index = Self::new(targets);
        if !targets_only {
            let target = Target::new(pyro_core::Labels::from_iter([(
                names::SERVICE_NAME,
                DEFAULT_SERVICE_NAME,
            )]));
            index.default = Some(Arc::new(ResolvedTarget::new(&target, None)));
        }
        index
    }

    pub(crate) fn new(targets: &[Target]) -> Self {
        let mut index = Self::default();
        for target in targets {
            if let Some(pid) = target.pid() {
                let resolved =
                    ResolvedTarget::new(target, Some((names::PROCESS_PID, &pid.to_string())));
                index.by_pid.insert(pid, Arc::new(resolved));
            } else if let Some(id) = target.container_id() {
                let resolved = ResolvedTarget::new(target, Some((names::CONTAINER_ID, id)));
                index.by_container.insert(id.to_owned(), Arc::new(resolved));
            } else {
                tracing::debug!(labels = %target.labels(), "Target has no pid or container id; ignored.");
            }
        }
        index
    }

    /// The pids the targets name.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.by_pid.keys().copied().collect()
    }

    /// Whether a target names `pid`.
    pub(crate) fn names_pid(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// Number of usable targets.
    pub(crate) fn len(&self) -> usize {
        self.by_pid.len() + self.by_container.len()
    }

    /// The target of process `pid`: by pid first, then by its container id (looked up through
    /// `container_id` only when some target has one).
    pub(crate) fn lookup(
        &self,
        pid: u32,
        container_id: impl FnOnce() -> Option<Arc<str>>,
    ) -> Option<Arc<ResolvedTarget>> {
        if let Some(t) = self.by_pid.get(&pid) {
            return Some(t.clone());
        }
        if !self.by_container.is_empty()
            && let Some(t) = container_id().and_then(|id| self.by_container.get(&*id).cloned())
        {
            return Some(t);
        }
        self.default.clone()
    }
}

/// Reads what the collector needs about a process from procfs, with the container-id cache.
#[derive(Debug)]
pub(crate) struct ProcReader {
    root: PathBuf,
    container_ids: moka::sync::Cache<u32, Option<Arc<str>>>,
}

pub(crate) use pyro_core::proc::ProcStat;

impl ProcReader {
    pub(crate) fn new(root: impl Into<PathBuf>, container_id_cache_size: usize) -> Self {
        Self {
            root: root.into(),
            container_ids: moka::sync::Cache::new(container_id_cache_size as u64),
        }
    }

    /// The container id of `pid` (cached; `None` when it has none or is gone).
    pub(crate) fn container_id(&self, pid: u32) -> Option<Arc<str>> {
        self.container_ids.get_with(pid, || {
            let text = pyro_core::proc::cgroup(&self.root, pid).ok()?;
            container_id_from_cgroup(&text).map(Arc::from)
        })
    }

    /// The process's `comm` (its main thread's name).
    pub(crate) fn comm(&self, pid: u32) -> Option<String> {
        pyro_core::proc::comm(&self.root, pid)
    }

    /// Start time and kernel-thread flag from `/proc/PID/stat`; `None` when the process is gone.
    pub(crate) fn stat(&self, pid: u32) -> Option<ProcStat> {
        pyro_core::proc::stat(&self.root, pid)
    }

    /// The identity (device, inode) of the program `pid` runs, from `/proc/PID/exe`; changes
    /// when the process execs another program. `None` when the process is gone.
    pub(crate) fn exe(&self, pid: u32) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.root.join(pid.to_string()).join("exe")).ok()?;
        Some((meta.dev(), meta.ino()))
    }

    /// Forgets what is cached about `pid`.
    pub(crate) fn forget(&self, pid: u32) {
        self.container_ids.invalidate(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pairs: &[(&str, &str)]) -> Target {
        Target::new(Labels::from_iter(pairs.iter().copied()))
    }

    #[test]
    fn index_matches_pid_first_then_container() {
        let cid = "c".repeat(64);
        let idx = TargetIndex::new(&[
            target(&[("__process_pid__", "10"), ("service_name", "by-pid")]),
            target(&[
                ("__container_id__", cid.as_str()),
                ("__meta_docker_container_name", "/web"),
                ("env", "prod"),
            ]),
            target(&[("service_name", "no-key")]),
        ]);
        assert_eq!(idx.len(), 2);
        let by_pid = idx.lookup(10, || panic!("not needed")).unwrap();
        assert_eq!(by_pid.labels.get("service_name"), Some("by-pid"));
        assert_eq!(by_pid.labels.get("__process_pid__"), Some("10"));
        let by_cid = idx.lookup(11, || Some(Arc::from(cid.as_str()))).unwrap();
        assert_eq!(
            by_cid.labels.to_string(),
            format!(
                "{{__container_id__=\"{cid}\", __name__=\"process_cpu\", env=\"prod\", service_name=\"web\"}}"
            )
        );
        assert!(idx.lookup(12, || Some(Arc::from("d".repeat(64)))).is_none());
        assert!(idx.lookup(13, || None).is_none());
    }

    #[test]
    fn targets_only_false_gives_the_rest_alloys_default_target() {
        let targets = [target(&[("__process_pid__", "10"), ("service_name", "a")])];
        let only = TargetIndex::with_default(&targets, true);
        assert!(only.lookup(11, || None).is_none());
        let all = TargetIndex::with_default(&targets, false);
        assert_eq!(all.len(), 1);
        let a = all.lookup(10, || None).unwrap();
        assert_eq!(a.service_name, "a");
        let rest = all.lookup(11, || Some(Arc::from("d".repeat(64)))).unwrap();
        assert_eq!(
            rest.labels.to_string(),
            "{__name__=\"process_cpu\", service_name=\"ebpf/unspecified\"}"
        );
    }

    #[test]
    fn labels_drop_reserved_but_keep_name() {
        let idx = TargetIndex::new(&[target(&[
            ("__process_pid__", "5"),
            ("__name__", "custom"),
            ("__meta_process_exe", "/bin/x"),
            ("__address__", "x"),
            ("team", "a"),
        ])]);
        let t = idx.lookup(5, || None).unwrap();
        assert_eq!(t.labels.get("__name__"), Some("custom"));
        assert_eq!(t.labels.get("service_name"), Some("unspecified"));
        assert!(t.labels.get("__meta_process_exe").is_none());
        assert!(t.labels.get("__address__").is_none());
        assert_eq!(t.labels.get("team"), Some("a"));
    }

    #[test]
    fn later_duplicates_win() {
        let idx = TargetIndex::new(&[
            target(&[("__process_pid__", "7"), ("v", "1")]),
            target(&[("__process_pid__", "7"), ("v", "2")]),
        ]);
        assert_eq!(idx.lookup(7, || None).unwrap().labels.get("v"), Some("2"));
    }

    #[test]
    fn stat_of_this_process_and_a_kernel_thread() {
        let me = ProcReader::new("/proc", 4);
        let s = me.stat(std::process::id()).unwrap();
        assert!(!s.kernel_thread);
        assert!(me.stat(2).is_none_or(|s| s.kernel_thread));
    }
}
