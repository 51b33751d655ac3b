//! The [`Discoverer`] trait: sources of targets.

use std::fmt;

use futures_core::stream::BoxStream;

use crate::target::Target;

/// A stream of complete target sets: each item replaces the previous one.
pub type TargetStream = BoxStream<'static, Vec<Target>>;

/// A source of [`Target`]s: process discovery, a static list, a relabelling wrapper around
/// another discoverer, and later Kubernetes or Docker.
///
/// [`subscribe`](Discoverer::subscribe) hands out a stream whose first item is the current set
/// and whose later items are full replacements (not deltas), so a consumer only ever keeps the
/// latest. The stream does the discovery work as it is polled — a discoverer has no background
/// task of its own — and ends when the source will never change again (a static list ends after
/// its one item). Consumers such as the eBPF collector and the enricher take the sets through
/// their `set_targets`/update methods; a host wires the two with a few lines:
///
/// ```
/// use futures_util::StreamExt;
/// use pyro_core::{Discoverer, Labels, StaticDiscoverer, Target};
///
/// let source = StaticDiscoverer::new(vec![Target::new(Labels::from_iter([("service_name", "a")]))]);
/// let mut updates = source.subscribe();
/// let first = futures_executor::block_on(updates.next()).unwrap();
/// assert_eq!(first.len(), 1);
/// assert!(futures_executor::block_on(updates.next()).is_none());
/// ```
pub trait Discoverer: Send + Sync + fmt::Debug {
    /// A stream of target sets, starting with the current one.
    fn subscribe(&self) -> TargetStream;
}

/// A fixed list of targets: one item, then the stream ends.
#[derive(Debug, Clone, Default)]
pub struct StaticDiscoverer {
    targets: Vec<Target>,
}

impl StaticDiscoverer {
    /// A discoverer that always yields `targets`.
    pub fn new(targets: Vec<Target>) -> Self {
        Self { targets }
    }
}

impl Discoverer for StaticDiscoverer {
    fn subscribe(&self) -> TargetStream {
        Box::pin(futures_util::stream::iter([self.targets.clone()]))
    }
}

impl<D: Discoverer + ?Sized> Discoverer for std::sync::Arc<D> {
    fn subscribe(&self) -> TargetStream {
        (**self).subscribe()
    }
}
