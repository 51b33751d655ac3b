//! A pod's container profiled end to end: containerd (the one `.ci/docker.sh`'s dockerd runs,
//! found next to `PYRO_DOCKER_HOST`) runs a busy static workload in the kubelet's cgroupfs
//! layout (`/kubepods/besteffort/pod<uid>/<id>`); `discovery.kubernetes` lists the pod from a
//! local API server whose pod object carries `containerd://<id>`; the collector matches the
//! cgroup id against it and names the profile `ebpf/<namespace>/<container>`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use pyro_core::Discoverer;
use pyro_discovery::kubernetes::{KubernetesConfig, KubernetesDiscoverer};
use pyro_ebpf::EbpfConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn containerd_socket() -> Option<PathBuf> {
    let host = std::env::var("PYRO_DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    let sock = host
        .as_deref()
        .and_then(|h| h.strip_prefix("unix://"))
        .map(|s| {
            Path::new(s)
                .parent()
                .unwrap_or(Path::new("/"))
                .join("exec/containerd/containerd.sock")
        });
    let found = sock.filter(|s| s.exists());
    if found.is_none() {
        assert!(
            std::env::var("PYRO_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "no containerd socket beside PYRO_DOCKER_HOST and PYRO_REQUIRE_TOOLS=1 (see .ci/docker.sh)"
        );
        eprintln!("SKIPPED: PYRO_DOCKER_HOST is not set or has no containerd (see .ci/docker.sh)");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A containerd task that is killed and removed, with the pod's cgroups, on drop.
struct Task {
    ctr: Vec<String>,
    id: String,
    pod_cgroup: String,
}

impl Drop for Task {
    fn drop(&mut self) {
        let ctr = |args: &[&str]| {
            let _ = Command::new("ctr").args(&self.ctr).args(args).output();
        };
        ctr(&["tasks", "kill", "-s", "KILL", &self.id]);
        std::thread::sleep(Duration::from_millis(300));
        ctr(&["tasks", "rm", "-f", &self.id]);
        ctr(&["containers", "rm", &self.id]);
        // runc removes the container's cgroup; the pod's and QoS parents are ours to remove.
        if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
            for d in dirs.flatten() {
                let pod = d.path().join(self.pod_cgroup.trim_start_matches('/'));
                let _ = std::fs::remove_dir(&pod);
                if let Some(qos) = pod.parent() {
                    let _ = std::fs::remove_dir(qos);
                    let _ = qos.parent().map(std::fs::remove_dir);
                }
            }
        }
    }
}

/// Serves `GET /api/v1/pods` (list) with `pod`, and a watch that stays open.
async fn api_server(pod: serde_json::Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "10"}, "items": [pod]})
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let list = list.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .contains("watch=true")
                {
                    let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n").await;
                    tokio::time::sleep(Duration::from_secs(600)).await;
                } else {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        list.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(list.as_bytes()).await;
                }
            });
        }
    });
    url
}

#[test]
fn pod_container_in_kubepods_cgroup_is_profiled() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let Some(sock) = containerd_socket() else {
        return;
    };
    let Some(gcc) = pyro_testkit::tool("gcc") else {
        return;
    };
    let host = std::env::var("PYRO_DOCKER_HOST").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("incontainer.c");
    std::fs::write(&src, spinner_source("inside")).unwrap();
    let bin = dir.path().join("incontainer");
    run(Command::new(gcc)
        .args([
            "-static",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-inline",
            "-o",
        ])
        .arg(&bin)
        .arg(&src));

    // The busybox image, from the Docker engine into containerd's Kubernetes namespace.
    let ctr = vec![
        "-a".to_owned(),
        sock.display().to_string(),
        "-n".to_owned(),
        "k8s.io".to_owned(),
    ];
    let image = "docker.io/library/pyro-busybox:latest";
    let tar = dir.path().join("image.tar");
    run(Command::new("docker")
        .args(["-H", &host, "save", "-o"])
        .arg(&tar)
        .arg("pyro-busybox:latest"));
    run(Command::new("ctr")
        .args(&ctr)
        .args(["images", "import"])
        .arg(&tar));

    let id = format!("{:016x}", std::process::id() ^ 0x5eed).repeat(4);
    let uid = format!("7e4e2b1c-8d2f-4b6a-9c1e-{:012x}", std::process::id());
    let pod_cgroup = format!("/kubepods/besteffort/pod{uid}");
    let mount = format!(
        "type=bind,src={},dst=/w,options=rbind:ro",
        dir.path().display()
    );
    let task = Task {
        ctr: ctr.clone(),
        id: id.clone(),
        pod_cgroup: pod_cgroup.clone(),
    };
    run(Command::new("ctr")
        .args(&ctr)
        .args(["run", "-d", "--cgroup"])
        .arg(format!("{pod_cgroup}/{id}"))
        .args([
            "--mount",
            &mount,
            image,
            &id,
            "sh",
            "-c",
            "echo go | /w/incontainer 4",
        ]));

    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cart-7d9f", "namespace": "shop", "uid": uid, "resourceVersion": "9",
                     "labels": {"app": "cart"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "cart", "image": image}]},
        "status": {"podIP": "10.1.0.7", "phase": "Running",
                   "containerStatuses": [{"name": "cart", "containerID": format!("containerd://{id}"),
                       "image": image, "imageID": "", "ready": true, "restartCount": 0}]}
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let targets = rt.block_on(async {
        let url = api_server(pod).await;
        let config: KubernetesConfig = serde_json::from_value(serde_json::json!({
            "role": "pod", "api_server": url,
            "selectors": [{"role": "pod", "field": "spec.nodeName=n1"}],
        }))
        .unwrap();
        let d = KubernetesDiscoverer::new(config).unwrap();
        tokio::time::timeout(Duration::from_secs(30), d.subscribe().next())
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(targets.len(), 1);

    let mut collector = collector(EbpfConfig::default(), targets);
    let running = || {
        run(Command::new("ctr").args(&ctr).args(["tasks", "ls"]))
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING"))
    };
    poll_until(&mut collector, Duration::from_secs(60), || !running());
    let profiles = collector.collect();
    drop(task);

    let ours: Vec<_> = profiles
        .iter()
        .filter(|p| p.labels.get("__container_id__") == Some(id.as_str()))
        .collect();
    assert!(
        !ours.is_empty(),
        "no profile of the pod's container among {}",
        profiles.len()
    );
    let mut saw = false;
    for p in &ours {
        assert_eq!(p.labels.get("service_name"), Some("ebpf/shop/cart"));
        check_with_go_pprof(p, dir.path());
        saw |= has_path(p, &["main", "work_inside", "spin_inside"]);
    }
    assert!(saw, "the container's busy loop is not in its profile");
}
