//! `discovery.docker` against a real Docker engine: the private dockerd `.ci/docker.sh` starts
//! (socket in `PYRO_DOCKER_HOST`, image `pyro-busybox:latest`). Containers with names, labels,
//! a user network, published and exposed ports, host networking and a shared network namespace;
//! the targets must equal what `docker inspect` reports, turned into targets by Prometheus's
//! rules here in the test (from the inspect JSON, not the list API the discoverer reads).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use pyro_core::Discoverer;
use pyro_discovery::docker::{DockerConfig, DockerDiscoverer};
use serde_json::Value;

const IMAGE: &str = "pyro-busybox:latest";

/// The engine's address, or `None` (skip) — a failure when `PYRO_REQUIRE_TOOLS=1`.
fn docker_host() -> Option<String> {
    let host = std::env::var("PYRO_DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    if host.is_none() {
        assert!(
            std::env::var("PYRO_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "PYRO_DOCKER_HOST is not set and PYRO_REQUIRE_TOOLS=1: start an engine with \
             `.ci/docker.sh start DIR` and export the socket it prints"
        );
        eprintln!("SKIPPED: PYRO_DOCKER_HOST is not set (see .ci/docker.sh)");
    }
    host
}

struct Cli {
    host: String,
    created: Vec<String>,
    networks: Vec<String>,
}

impl Cli {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .output()
            .expect("docker CLI runs");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn container(&mut self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        let id = self.run(&all);
        self.created.push(id.clone());
        id
    }

    fn network(&mut self, args: &[&str]) -> String {
        let mut all = vec!["network", "create"];
        all.extend_from_slice(args);
        let id = self.run(&all);
        self.networks.push(id.clone());
        id
    }

    fn inspect(&self, what: &str, id: &str) -> Value {
        let v: Value = serde_json::from_str(&self.run(&[what, "inspect", id])).unwrap();
        v[0].clone()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        for id in self.created.iter().rev() {
            let _ = Command::new("docker")
                .args(["-H", &self.host, "rm", "-f", id])
                .output();
        }
        for id in &self.networks {
            let _ = Command::new("docker")
                .args(["-H", &self.host, "network", "rm", id])
                .output();
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

type Set = BTreeMap<String, String>;

/// Prometheus's targets for one container, from `docker inspect` of it, of the container
/// whose network namespace it shares, and of its networks.
fn expected(cli: &Cli, id: &str, match_first_network: bool) -> Vec<Set> {
    let c = cli.inspect("container", id);
    let mode = c["HostConfig"]["NetworkMode"].as_str().unwrap().to_owned();
    let mut common = Set::new();
    common.insert(
        "__meta_docker_container_id".into(),
        c["Id"].as_str().unwrap().into(),
    );
    common.insert(
        "__meta_docker_container_name".into(),
        c["Name"].as_str().unwrap().into(),
    );
    common.insert("__meta_docker_container_network_mode".into(), mode.clone());
    common.insert(
        "__meta_docker_container_image".into(),
        c["Config"]["Image"].as_str().unwrap().into(),
    );
    common.insert(
        "__meta_docker_container_image_id".into(),
        c["Image"].as_str().unwrap().into(),
    );
    for (k, v) in c["Config"]["Labels"].as_object().unwrap() {
        common.insert(
            format!("__meta_docker_container_label_{}", sanitize(k)),
            v.as_str().unwrap().into(),
        );
    }
    let mut nets = c["NetworkSettings"]["Networks"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if nets.is_empty()
        && let Some(other) = mode.strip_prefix("container:")
    {
        nets = cli.inspect("container", other)["NetworkSettings"]["Networks"]
            .as_object()
            .cloned()
            .unwrap();
    }
    let mut names: Vec<&String> = nets.keys().collect();
    names.sort();
    if match_first_network {
        names.truncate(1);
    }
    // Ports as inspect lists them: `"8080/tcp": [{"HostIp", "HostPort"}]` or null if only exposed.
    let mut ports: Vec<(u16, Option<(String, String)>)> = Vec::new();
    for (spec, bindings) in c["NetworkSettings"]["Ports"].as_object().unwrap() {
        let (port, proto) = spec.split_once('/').unwrap();
        if proto != "tcp" {
            continue;
        }
        let port: u16 = port.parse().unwrap();
        match bindings.as_array() {
            Some(b) if !b.is_empty() => {
                for b in b {
                    ports.push((
                        port,
                        Some((
                            b["HostIp"].as_str().unwrap().into(),
                            b["HostPort"].as_str().unwrap().into(),
                        )),
                    ));
                }
            }
            _ => ports.push((port, None)),
        }
    }
    let mut out = Vec::new();
    for name in names {
        let n = &nets[name];
        let mut base = common.clone();
        let ip = n["IPAddress"].as_str().unwrap_or_default().to_owned();
        base.insert("__meta_docker_network_ip".into(), ip.clone());
        let net = cli.inspect("network", n["NetworkID"].as_str().unwrap());
        base.insert(
            "__meta_docker_network_id".into(),
            net["Id"].as_str().unwrap().into(),
        );
        base.insert(
            "__meta_docker_network_name".into(),
            net["Name"].as_str().unwrap().into(),
        );
        base.insert(
            "__meta_docker_network_scope".into(),
            net["Scope"].as_str().unwrap().into(),
        );
        base.insert(
            "__meta_docker_network_internal".into(),
            net["Internal"].to_string(),
        );
        base.insert(
            "__meta_docker_network_ingress".into(),
            net["Ingress"].to_string(),
        );
        for (k, v) in net["Labels"].as_object().into_iter().flatten() {
            base.insert(
                format!("__meta_docker_network_label_{}", sanitize(k)),
                v.as_str().unwrap().into(),
            );
        }
        for (port, binding) in &ports {
            let mut t = base.clone();
            t.insert("__meta_docker_port_private".into(), port.to_string());
            if let Some((hip, hport)) = binding {
                t.insert("__meta_docker_port_public".into(), hport.clone());
                t.insert("__meta_docker_port_public_ip".into(), hip.clone());
            }
            t.insert("__address__".into(), format!("{ip}:{port}"));
            out.push(t);
        }
        if ports.is_empty() {
            let mut t = base;
            let addr = if mode == "host" {
                "localhost".to_owned()
            } else {
                format!("{ip}:80")
            };
            t.insert("__address__".into(), addr);
            out.push(t);
        }
    }
    // Empty values are absent labels.
    out.into_iter()
        .map(|t| t.into_iter().filter(|(_, v)| !v.is_empty()).collect())
        .collect()
}

fn sets(targets: &[pyro_core::Target]) -> BTreeSet<Set> {
    targets
        .iter()
        .map(|t| {
            t.labels()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_equal_docker_inspect() {
    let Some(host) = docker_host() else { return };
    let run = format!("{}-{}", std::process::id(), rand_suffix());
    let mut cli = Cli {
        host: host.clone(),
        created: Vec::new(),
        networks: Vec::new(),
    };
    let tag = format!("pyro.test.run={run}");

    let net_a = cli.network(&[
        "--label",
        "com.example.team=profiling",
        "--label",
        "tier",
        &format!("a-{run}"),
    ]);
    let net_b = cli.network(&[&format!("b-{run}")]);
    let web = cli.container(&[
        "--name",
        &format!("web-{run}"),
        "--label",
        &tag,
        "--label",
        "app.kubernetes.io/name=web",
        "--label",
        "env=prod",
        "--network",
        &net_a,
        "-p",
        "127.0.0.1::8080",
        "--expose",
        "9090",
        "--expose",
        "5353/udp",
        IMAGE,
        "sleep",
        "300",
    ]);
    let noport = cli.container(&[
        "--name",
        &format!("noport-{run}"),
        "--label",
        &tag,
        "--network",
        &net_a,
        IMAGE,
        "sleep",
        "300",
    ]);
    let multi = cli.container(&[
        "--name",
        &format!("multi-{run}"),
        "--label",
        &tag,
        "--network",
        &net_b,
        "--expose",
        "7000",
        IMAGE,
        "sleep",
        "300",
    ]);
    cli.run(&["network", "connect", &net_a, &multi]);
    let hostnet = cli.container(&[
        "--name",
        &format!("hostnet-{run}"),
        "--label",
        &tag,
        "--network",
        "host",
        IMAGE,
        "sleep",
        "300",
    ]);
    let shared = cli.container(&[
        "--name",
        &format!("shared-{run}"),
        "--label",
        &tag,
        "--network",
        &format!("container:{web}"),
        IMAGE,
        "sleep",
        "300",
    ]);
    // Not labelled for this run: the filter leaves it out.
    cli.container(&[
        "--name",
        &format!("other-{run}"),
        "--network",
        &net_a,
        IMAGE,
        "sleep",
        "300",
    ]);
    let ours = [&web, &noport, &multi, &hostnet, &shared];

    for match_first_network in [true, false] {
        let config: DockerConfig = serde_json::from_value(serde_json::json!({
            "host": host,
            "refresh_interval": "1s",
            "match_first_network": match_first_network,
            "filter": [{"name": "label", "values": [tag]}],
        }))
        .unwrap();
        let discovery = DockerDiscoverer::new(config).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), discovery.subscribe().next())
            .await
            .expect("a target set within 30 s")
            .unwrap();
        let want: BTreeSet<Set> = ours
            .iter()
            .flat_map(|id| expected(&cli, id, match_first_network))
            .collect();
        assert_eq!(
            sets(&got),
            want,
            "match_first_network={match_first_network}"
        );
        // One target per TCP port and network: web has 8080 and 9090 (5353 is UDP), multi has
        // 7000 on one or two networks, the others one each (shared takes web's network but has
        // no ports of its own, so it gets `port`).
        let per_container = |id: &str| got.iter().filter(|t| t.container_id() == Some(id)).count();
        assert_eq!(per_container(&web), 2);
        assert_eq!(
            per_container(&multi),
            if match_first_network { 1 } else { 2 }
        );
        assert_eq!(per_container(&shared), 1);
        assert_eq!(per_container(&noport), 1);
        let host_target = got
            .iter()
            .find(|t| t.container_id() == Some(hostnet.as_str()))
            .unwrap();
        assert_eq!(host_target.labels().get("__address__"), Some("localhost"));
        assert_eq!(discovery.metrics().failures(), 0);
        // service_name as the collector infers it: the container name without Docker's `/`.
        let web_target = got
            .iter()
            .find(|t| t.container_id() == Some(web.as_str()))
            .unwrap();
        assert_eq!(web_target.service_name(), format!("web-{run}"));
    }

    // A container that appears is in the next set.
    let config: DockerConfig = serde_json::from_value(serde_json::json!({
        "host": host, "refresh_interval": "200ms", "filter": [{"name": "label", "values": [tag]}],
    }))
    .unwrap();
    let discovery = DockerDiscoverer::new(config).unwrap();
    let mut stream = discovery.subscribe();
    let first = stream.next().await.unwrap();
    let late = cli.container(&[
        "--name",
        &format!("late-{run}"),
        "--label",
        &tag,
        "--network",
        &net_a,
        IMAGE,
        "sleep",
        "300",
    ]);
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.len(), first.len() + 1);
    assert!(next.iter().any(|t| t.container_id() == Some(late.as_str())));
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}
