//! The [`Discoverer`] trait: sources of targets.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_core::stream::BoxStream;
use futures_util::StreamExt;

use crate::lifecycle::{LifecycleError, Stage, StopSignal};
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
/// its one item). Consumers such as the eBPF collector and the enricher implement
/// [`TargetConsumer`]; [`feed`] wires a discoverer to them in one call. Reading a stream by
/// hand:
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

/// The consumer side of a [`Discoverer`]: a stage that takes complete target sets (the eBPF
/// collector's handle, the enricher). [`feed`] hands every set a discoverer yields to them.
pub trait TargetConsumer: Send + Sync {
    /// Replaces the consumer's targets with `targets`.
    fn set_targets(&self, targets: Vec<Target>);
}

impl<C: TargetConsumer + ?Sized> TargetConsumer for Arc<C> {
    fn set_targets(&self, targets: Vec<Target>) {
        (**self).set_targets(targets);
    }
}

/// Stops a [`feed`]. Cloneable; dropping it does not stop the feed (the feed ends with its
/// discoverer's stream, or on [`shutdown`](FeedHandle::shutdown)).
#[derive(Debug, Clone)]
pub struct FeedHandle {
    stop: StopSignal,
}

impl FeedHandle {
    /// Stops feeding: the consumers keep the last set they were given. Nothing is held, so
    /// flushing does nothing and shutting down never waits.
    pub fn stop(&self) {
        self.stop.trigger();
    }
}

#[async_trait::async_trait]
impl Stage for FeedHandle {
    async fn flush(&self, _deadline: Instant) -> Result<(), LifecycleError> {
        Ok(())
    }

    async fn shutdown(&self, _deadline: Instant) -> Result<(), LifecycleError> {
        self.stop();
        Ok(())
    }
}

/// Feeds every target set `source` yields to each of `consumers` — "discovery → relabel →
/// collector/enricher" in one call. Returns the handle and the future that does the work, to
/// spawn on any runtime (it needs none of its own); the future ends when the stream ends or
/// the handle stops it.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use pyro_core::discoverer::{TargetConsumer, feed};
/// use pyro_core::{Labels, StaticDiscoverer, Target};
///
/// #[derive(Default)]
/// struct Last(Mutex<Vec<Target>>);
/// impl TargetConsumer for Last {
///     fn set_targets(&self, targets: Vec<Target>) { *self.0.lock().unwrap() = targets; }
/// }
///
/// let last = Arc::new(Last::default());
/// let source = StaticDiscoverer::new(vec![Target::new(Labels::from_iter([("service_name", "a")]))]);
/// let (_handle, run) = feed(&source, [last.clone() as Arc<dyn TargetConsumer>]);
/// futures_executor::block_on(run);
/// assert_eq!(last.0.lock().unwrap().len(), 1);
/// ```
pub fn feed(
    source: &dyn Discoverer,
    consumers: impl IntoIterator<Item = Arc<dyn TargetConsumer>>,
) -> (FeedHandle, impl Future<Output = ()> + Send + 'static) {
    let stop = StopSignal::new();
    let handle = FeedHandle { stop: stop.clone() };
    let consumers: Vec<_> = consumers.into_iter().collect();
    let mut updates = source.subscribe();
    let run = async move {
        let stopped = stop.wait();
        futures_util::pin_mut!(stopped);
        loop {
            let next = updates.next();
            futures_util::pin_mut!(next);
            match futures_util::future::select(stopped.as_mut(), next).await {
                futures_util::future::Either::Left(_) => break,
                futures_util::future::Either::Right((None, _)) => break,
                futures_util::future::Either::Right((Some(targets), _)) => {
                    tracing::debug!(targets = targets.len(), "Discovered targets handed on.");
                    if let Some((last, rest)) = consumers.split_last() {
                        for c in rest {
                            c.set_targets(targets.clone());
                        }
                        last.set_targets(targets);
                    }
                }
            }
        }
    };
    (handle, run)
}
