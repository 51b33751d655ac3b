//! [`RelabelDiscoverer`]: relabelling as a [`Discoverer`] wrapper (`discovery.relabel`).

use std::sync::Arc;

use futures_util::StreamExt;
use pyro_core::{Discoverer, Target, TargetStream};

use super::RelabelRules;

/// Applies [`RelabelRules`] to every target set another [`Discoverer`] yields.
///
/// Targets a rule drops are removed from the set. As in Alloy's `discovery.relabel` (and unlike
/// Prometheus), a target whose labels all get removed is still emitted, with no labels. Which
/// label names the rules may write is the [`NameValidation`](super::NameValidation) the rules
/// were compiled with: `Legacy` by default, `Utf8` to match Alloy ≥ 1.11's `discovery.relabel`.
///
/// ```
/// use pyro_core::{Discoverer, Labels, StaticDiscoverer, Target};
/// use pyro_discovery::relabel::{Action, RelabelConfig, RelabelDiscoverer, RelabelRules};
/// use futures_util::StreamExt;
///
/// let rules = RelabelRules::new(&[RelabelConfig {
///     source_labels: vec!["env".into()],
///     regex: "dev".into(),
///     action: Action::Drop,
///     ..Default::default()
/// }])
/// .unwrap();
/// let source = StaticDiscoverer::new(vec![
///     Target::new(Labels::from_iter([("env", "dev")])),
///     Target::new(Labels::from_iter([("env", "prod")])),
/// ]);
/// let relabelled = RelabelDiscoverer::new(source, rules);
/// let first = futures_executor::block_on(relabelled.subscribe().next()).unwrap();
/// assert_eq!(first.len(), 1);
/// assert_eq!(first[0].labels().get("env"), Some("prod"));
/// ```
#[derive(Debug, Clone)]
pub struct RelabelDiscoverer<D> {
    inner: D,
    rules: Arc<RelabelRules>,
}

impl<D: Discoverer> RelabelDiscoverer<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, rules: impl Into<Arc<RelabelRules>>) -> Self {
        Self {
            inner,
            rules: rules.into(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &Arc<RelabelRules> {
        &self.rules
    }
}

/// Applies `rules` to each target of `targets`, keeping those no rule dropped.
pub fn relabel_targets(rules: &RelabelRules, targets: Vec<Target>) -> Vec<Target> {
    targets
        .into_iter()
        .filter_map(|t| rules.apply(t.into_labels()).map(Target::new))
        .collect()
}

impl<D: Discoverer> Discoverer for RelabelDiscoverer<D> {
    fn subscribe(&self) -> TargetStream {
        let rules = Arc::clone(&self.rules);
        self.inner
            .subscribe()
            .map(move |targets| relabel_targets(&rules, targets))
            .boxed()
    }
}
