//! Prometheus's own Docker discovery cases (`discovery/moby/docker_test.go`), on its fixtures.

use std::collections::BTreeMap;

use bollard::models::{ContainerSummary, Network};

use super::targets::{TargetRules, sanitize_label_name, targets};
use super::{DockerConfig, DockerDiscoverer, DockerError};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/docker/prometheus"
);

fn read<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rules(match_first_network: bool) -> TargetRules {
    let d = DockerConfig::default();
    TargetRules {
        port: d.port,
        host_networking_host: d.host_networking_host,
        match_first_network,
    }
}

/// Label sets as sorted maps, without empty values (which Prometheus treats as absent).
fn sets(targets: &[pyro_core::Target]) -> Vec<BTreeMap<String, String>> {
    let mut v: Vec<_> = targets
        .iter()
        .map(|t| {
            t.labels()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect::<BTreeMap<_, _>>()
        })
        .collect();
    v.sort();
    v
}

fn expected(test: &str) -> Vec<BTreeMap<String, String>> {
    let all: BTreeMap<String, Vec<BTreeMap<String, String>>> = read("expected.json");
    let mut v: Vec<_> = all[test]
        .iter()
        .map(|s| {
            s.iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn prometheus_refresh() {
    let containers: Vec<ContainerSummary> = read("containers.json");
    let networks: Vec<Network> = read("networks.json");
    let got = targets(&containers, &networks, &rules(true));
    assert_eq!(got.len(), 8);
    assert_eq!(sets(&got), expected("TestDockerSDRefresh"));
}

#[test]
fn prometheus_refresh_match_all_networks() {
    let containers: Vec<ContainerSummary> = read("containers.json");
    let networks: Vec<Network> = read("networks.json");
    let got = targets(&containers, &networks, &rules(false));
    assert_eq!(got.len(), 13);
    assert_eq!(sets(&got), expected("TestDockerSDRefreshMatchAllNetworks"));
}

#[test]
fn prometheus_refresh_ipv6_only() {
    let containers: Vec<ContainerSummary> = read("ipv6-containers.json");
    let networks: Vec<Network> = read("ipv6-networks.json");
    let got = targets(&containers, &networks, &rules(true));
    assert_eq!(sets(&got), expected("TestDockerSDRefreshIPv6Only"));
}

/// The fuzzing entry point decodes the raw answers and gives Prometheus's expected targets.
#[test]
fn fuzzing_entry_point_matches_prometheus() {
    let raw = |name: &str| std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
    let (c, n) = (raw("containers.json"), raw("networks.json"));
    let got = super::fuzzing::targets_from_json(&c, &n, true).unwrap();
    assert_eq!(sets(&got), expected("TestDockerSDRefresh"));
    let got = super::fuzzing::targets_from_json(&c, &n, false).unwrap();
    assert_eq!(sets(&got), expected("TestDockerSDRefreshMatchAllNetworks"));
    assert!(super::fuzzing::targets_from_json(b"{", &n, true).is_err());
}

#[test]
fn published_ports_and_unnamed_containers() {
    let containers: Vec<ContainerSummary> = serde_json::from_str(
        r#"[
        {"Id": "a", "Names": ["/web"], "HostConfig": {"NetworkMode": "bridge"},
         "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                   {"PrivatePort": 53, "Type": "udp"}],
         "NetworkSettings": {"Networks": {"bridge": {"NetworkID": "n1", "IPAddress": "172.17.0.2"}}}},
        {"Id": "b", "Names": [], "NetworkSettings": {"Networks": {"bridge": {"NetworkID": "n1"}}}}
    ]"#,
    )
    .unwrap();
    let got = sets(&targets(&containers, &[], &rules(true)));
    assert_eq!(got.len(), 1, "{got:?}");
    let t = &got[0];
    assert_eq!(t["__address__"], "172.17.0.2:80");
    assert_eq!(t["__meta_docker_port_public"], "8080");
    assert_eq!(t["__meta_docker_port_public_ip"], "0.0.0.0");
    assert_eq!(t["__meta_docker_port_private"], "80");
}

#[test]
fn sanitizes_like_prometheus() {
    assert_eq!(
        sanitize_label_name("com.docker.compose-project"),
        "com_docker_compose_project"
    );
    assert_eq!(sanitize_label_name("naïve/ü"), "na_ve__");
    assert_eq!(sanitize_label_name("ok_09"), "ok_09");
}

#[test]
fn config_defaults_and_errors() {
    let c: DockerConfig = serde_json::from_str(r#"{"host": "unix:///run/docker.sock"}"#).unwrap();
    assert_eq!(c.port, 80);
    assert_eq!(c.host_networking_host, "localhost");
    assert_eq!(c.refresh_interval, std::time::Duration::from_secs(60));
    assert!(c.match_first_network);
    assert!(DockerDiscoverer::new(c).is_ok());

    let bad = |json: &str| DockerDiscoverer::new(serde_json::from_str(json).unwrap()).unwrap_err();
    assert!(matches!(bad("{}"), DockerError::MissingHost));
    assert!(matches!(
        bad(r#"{"host": "ssh://x"}"#),
        DockerError::InvalidHost { .. }
    ));
    assert!(matches!(
        bad(r#"{"host": "/var/run/docker.sock"}"#),
        DockerError::InvalidHost { .. }
    ));
    let e = bad(r#"{"host": "unix:///s", "bearer_token": "t"}"#);
    assert!(e.to_string().contains("`authorization`"), "{e}");
    let e = bad(r#"{"host": "https://h:2376"}"#);
    assert!(e.to_string().contains("`tls_config`"), "{e}");
    let e = bad(r#"{"host": "tcp://h:2376", "tls_config": {"ca_file": "/ca"}}"#);
    assert!(e.to_string().contains("`tls_config.cert_file`"), "{e}");
    let e = bad(r#"{"host": "tcp://h", "bearer_token": "a", "basic_auth": {"username": "u"}}"#);
    assert!(e.to_string().contains("at most one"), "{e}");
    let e = bad(r#"{"host": "tcp://h", "bearer_token_file": "/nonexistent/token"}"#);
    assert!(
        matches!(
            e,
            DockerError::ReadFile {
                field: "bearer_token_file",
                ..
            }
        ),
        "{e}"
    );
    let e = bad(r#"{"host": "tcp://h", "refresh_interval": "0s"}"#);
    assert!(e.to_string().contains("`refresh_interval`"), "{e}");
    let e = bad(r#"{"host": "tcp://h", "filter": [{"values": ["x"]}]}"#);
    assert!(e.to_string().contains("`filter.name`"), "{e}");
    // Alloy arguments pyro does not support are refused by name.
    for field in ["proxy_url", "oauth2", "enable_http2", "follow_redirects"] {
        let e = serde_json::from_str::<DockerConfig>(&format!(
            r#"{{"host": "tcp://h", "{field}": true}}"#
        ))
        .unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
}
