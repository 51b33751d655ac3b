//! The cgroup-file rule never panics on any `/proc/PID/cgroup` contents, and the id it finds is
//! 64 lower-case hex digits taken from the file that a Kubernetes container id of any runtime
//! prefix matches; Alloy's `__meta_process_cgroup_path` joins the same lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_core::cgroup::{container_id_from_cgroup, kubernetes_container_id_matches};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(id) = container_id_from_cgroup(&text) {
        assert_eq!(id.len(), 64);
        assert!(
            id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
        assert!(text.contains(id));
        for runtime in ["containerd", "cri-o", "docker"] {
            assert!(kubernetes_container_id_matches(
                &format!("{runtime}://{id}"),
                id
            ));
        }
        assert!(!kubernetes_container_id_matches(id, id));
    }
    if let Some(joined) = pyro_discovery::process::cgroup_path(&text) {
        assert!(!joined.contains('\n'));
        if let Some(id) = container_id_from_cgroup(&text) {
            assert!(joined.contains(id));
        }
    }
});
