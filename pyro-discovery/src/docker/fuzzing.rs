//! Entry point for the `docker_targets` fuzz target (`fuzz/`): the Engine API's answers as
//! bytes, through the same models and target rules the discoverer uses. Not part of the API.

use bollard::models::{ContainerSummary, Network};
use pyro_core::Target;

use super::DockerConfig;
use super::targets::{TargetRules, targets};

/// Decodes `containers` (a `GET /containers/json` answer) and `networks` (a `GET /networks`
/// answer) as bollard decodes them for [`DockerDiscoverer`](super::DockerDiscoverer), and makes
/// the targets of them with the default rules, `match_first_network` as given.
pub fn targets_from_json(
    containers: &[u8],
    networks: &[u8],
    match_first_network: bool,
) -> Result<Vec<Target>, serde_json::Error> {
    let containers: Vec<ContainerSummary> = serde_json::from_slice(containers)?;
    let networks: Vec<Network> = serde_json::from_slice(networks)?;
    let d = DockerConfig::default();
    let rules = TargetRules {
        port: d.port,
        host_networking_host: d.host_networking_host,
        match_first_network,
    };
    Ok(targets(&containers, &networks, &rules))
}
