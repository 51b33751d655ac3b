//! A busy process in a real Docker container (the private engine `.ci/docker.sh` starts,
//! socket in `PYRO_DOCKER_HOST`) is profiled through `discovery.docker`'s target: matched by
//! `__meta_docker_container_id` against the id in its `/proc/<pid>/cgroup`, named after the
//! container. A busy process outside the container is not profiled.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use pyro_core::Discoverer;
use pyro_discovery::docker::{DockerConfig, DockerDiscoverer};
use pyro_ebpf::EbpfConfig;

fn docker_host() -> Option<String> {
    let host = std::env::var("PYRO_DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    if host.is_none() {
        assert!(
            std::env::var("PYRO_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "PYRO_DOCKER_HOST is not set and PYRO_REQUIRE_TOOLS=1 (see .ci/docker.sh)"
        );
        eprintln!("SKIPPED: PYRO_DOCKER_HOST is not set (see .ci/docker.sh)");
    }
    host
}

fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Container<'a> {
    host: &'a str,
    id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["-H", self.host, "rm", "-f", &self.id])
            .output();
    }
}

#[test]
fn busy_container_is_profiled_under_its_name() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let Some(host) = docker_host() else { return };
    let Some(gcc) = pyro_testkit::tool("gcc") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A static workload: the busybox image has no libc.
    let src = dir.path().join("incontainer.c");
    std::fs::write(&src, spinner_source("inside")).unwrap();
    let bin = dir.path().join("incontainer");
    let out = Command::new(gcc)
        .args([
            "-static",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-inline",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Some(outside_bin) = compile_c(dir.path(), "outside", &spinner_source("outside")) else {
        return;
    };

    let run = std::process::id();
    let name = format!("busy-{run}");
    let tag = format!("pyro.test.ebpf={run}");
    let volume = format!("{}:/w:ro", dir.path().display());
    let container = Container {
        host: &host,
        id: docker(
            &host,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "--label",
                &tag,
                "-v",
                &volume,
                "pyro-busybox:latest",
                "sh",
                "-c",
                "echo go | /w/incontainer 4",
            ],
        ),
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    let discovery: DockerConfig = serde_json::from_value(serde_json::json!({
        "host": host, "filter": [{"name": "label", "values": [tag]}],
    }))
    .unwrap();
    let targets = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                DockerDiscoverer::new(discovery).unwrap().subscribe().next(),
            )
            .await
        })
        .unwrap()
        .unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(
        targets[0].labels().get("__meta_docker_container_id"),
        Some(container.id.as_str())
    );

    let mut collector = collector(EbpfConfig::default(), targets);
    let mut outside = Workload::spawn(&outside_bin, &["2"]);
    outside.go();
    let running = || {
        docker(
            &host,
            &["inspect", "-f", "{{.State.Running}}", &container.id],
        ) == "true"
    };
    poll_until(&mut collector, Duration::from_secs(60), || {
        !running() && outside.exited()
    });
    outside.wait();
    let profiles = collector.collect();

    let ours: Vec<_> = profiles
        .iter()
        .filter(|p| p.labels.get("__container_id__") == Some(container.id.as_str()))
        .collect();
    assert!(
        !ours.is_empty(),
        "no profile of the container among {} profiles",
        profiles.len()
    );
    assert_eq!(
        ours.len(),
        profiles.len(),
        "only the container's processes are targets"
    );
    let mut saw = false;
    for p in &ours {
        assert_eq!(p.labels.get("service_name"), Some(name.as_str()));
        check_with_go_pprof(p, dir.path());
        saw |= has_path(p, &["main", "work_inside", "spin_inside"]);
        assert!(!has_path(p, &["spin_outside"]));
    }
    assert!(saw, "the container's busy loop is not in its profile");
}
