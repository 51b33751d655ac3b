//! [`Fanout`]: a receiver that forwards each profile to several receivers at once.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures_util::future::join_all;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::lifecycle::LifecycleError;
use crate::profile::Profile;
use crate::receiver::{AppendError, DynReceiver, Receiver};

/// Metric labels of one fan-out child.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildLabels {
    /// The child's name.
    pub child: String,
}

/// Metrics of a [`Fanout`], registered once and shared by any number of fan-outs.
#[derive(Debug, Clone)]
pub struct FanoutMetrics {
    latency: Family<ChildLabels, Histogram>,
    forwarded: Counter,
    failed: Family<ChildLabels, Counter>,
}

impl Default for FanoutMetrics {
    fn default() -> Self {
        Self {
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
            }),
            forwarded: Counter::default(),
            failed: Family::default(),
        }
    }
}

impl FanoutMetrics {
    /// Creates the metrics and registers them:
    /// `pyroscope_fanout_latency_seconds{child}` (histogram of each child's `append`),
    /// `pyroscope_forwarded_entries_total` (profiles every child accepted) and
    /// `pyroscope_fanout_failures_total{child}`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_fanout_latency_seconds",
            "Time each fan-out child took to accept a profile",
            m.latency.clone(),
        );
        registry.register(
            "pyroscope_forwarded_entries",
            "Profiles accepted by every fan-out child",
            m.forwarded.clone(),
        );
        registry.register(
            "pyroscope_fanout_failures",
            "Profiles a fan-out child refused",
            m.failed.clone(),
        );
        m
    }
}

/// Forwards every profile to all its children **concurrently** and joins their errors: the
/// append succeeds only if every child accepted the profile, and a failing child does not keep
/// the others from receiving it. (Alloy's fan-out calls children one after the other; a slow
/// child there delays all the rest.)
///
/// Each child's latency is observed in the `pyroscope_fanout_latency_seconds{child}` histogram
/// when [`FanoutMetrics`] are attached, and logged at `trace` level.
///
/// ```
/// use std::sync::Arc;
/// use pyro_core::{DynReceiver, Fanout, Labels, Profile, Receiver};
/// # #[derive(Debug)] struct Discard;
/// # #[pyro_core::async_trait] impl Receiver for Discard {
/// #     async fn append(&self, _: Profile) -> Result<(), pyro_core::AppendError> { Ok(()) }
/// # }
///
/// let fanout = Fanout::new([Arc::new(Discard) as DynReceiver, Arc::new(Discard)]);
/// let profile = Profile::new(Labels::from_iter([("__name__", "process_cpu")]), &b""[..]);
/// futures_executor::block_on(fanout.append(profile)).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Fanout {
    children: Arc<[(String, DynReceiver)]>,
    metrics: Option<FanoutMetrics>,
}

impl Fanout {
    /// A fan-out to `children`, named by position (`"0"`, `"1"`, …) in metrics and errors.
    pub fn new(children: impl IntoIterator<Item = DynReceiver>) -> Self {
        Self::named(
            children
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i.to_string(), r)),
        )
    }

    /// A fan-out to named children.
    pub fn named(children: impl IntoIterator<Item = (String, DynReceiver)>) -> Self {
        Self {
            children: children.into_iter().collect(),
            metrics: None,
        }
    }

    /// Attaches metrics.
    #[must_use]
    pub fn with_metrics(mut self, metrics: FanoutMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether there are no children (appends then succeed and go nowhere).
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

#[async_trait]
impl Receiver for Fanout {
    async fn append(&self, profile: Profile) -> Result<(), AppendError> {
        if let [(name, only)] = &*self.children {
            let start = self.timer();
            let res = only.append(profile).await;
            self.observe(name, start, res.is_ok());
            return res.map(|()| self.forwarded());
        }
        let calls = self.children.iter().map(|(name, child)| {
            let p = profile.clone();
            async move {
                let start = self.timer();
                let res = child.append(p).await;
                self.observe(name, start, res.is_ok());
                res
            }
        });
        let results = join_all(calls).await;
        match AppendError::join(results.into_iter().filter_map(Result::err)) {
            None => {
                self.forwarded();
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Flushes every child concurrently.
    async fn flush(&self, deadline: std::time::Instant) -> Result<(), LifecycleError> {
        let calls = self.children.iter().map(|(_, c)| c.flush(deadline));
        LifecycleError::join(join_all(calls).await)
    }

    /// Shuts every child down concurrently.
    async fn shutdown(&self, deadline: std::time::Instant) -> Result<(), LifecycleError> {
        let calls = self.children.iter().map(|(_, c)| c.shutdown(deadline));
        LifecycleError::join(join_all(calls).await)
    }
}

impl Fanout {
    /// A start time, when anything will use it (reading the clock costs tens of nanoseconds on
    /// a path that runs millions of times a second).
    fn timer(&self) -> Option<Instant> {
        (self.metrics.is_some() || tracing::enabled!(tracing::Level::TRACE)).then(Instant::now)
    }

    fn observe(&self, name: &str, start: Option<Instant>, ok: bool) {
        let Some(start) = start else {
            return;
        };
        let elapsed = start.elapsed();
        tracing::trace!(child = name, ?elapsed, ok, "Fan-out child returned.");
        if let Some(m) = &self.metrics {
            let labels = ChildLabels {
                child: name.to_owned(),
            };
            m.latency
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
            if !ok {
                m.failed.get_or_create(&labels).inc();
            }
        }
    }

    fn forwarded(&self) {
        if let Some(m) = &self.metrics {
            m.forwarded.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::FutureExt;

    use super::*;
    use crate::Labels;

    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<Profile>>,
        fail: bool,
    }

    #[async_trait]
    impl Receiver for Recorder {
        async fn append(&self, profile: Profile) -> Result<(), AppendError> {
            self.seen.lock().unwrap().push(profile);
            if self.fail {
                Err(AppendError::unavailable("boom"))
            } else {
                Ok(())
            }
        }
    }

    /// A child that is pending until the other child has run: proves children run
    /// concurrently (a sequential fan-out would never finish).
    #[derive(Debug)]
    struct WaitsFor(Arc<AtomicUsize>);

    #[async_trait]
    impl Receiver for WaitsFor {
        async fn append(&self, _: Profile) -> Result<(), AppendError> {
            futures_util::future::poll_fn(|cx| {
                if self.0.load(Ordering::SeqCst) > 0 {
                    std::task::Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Bumps(Arc<AtomicUsize>);

    #[async_trait]
    impl Receiver for Bumps {
        async fn append(&self, _: Profile) -> Result<(), AppendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn profile() -> Profile {
        Profile::new(Labels::from_iter([("__name__", "x")]), &b"pprof"[..])
    }

    #[test]
    fn all_children_get_it_even_when_one_fails() {
        let ok = Arc::new(Recorder::default());
        let bad = Arc::new(Recorder {
            fail: true,
            ..Default::default()
        });
        let mut registry = Registry::default();
        let f = Fanout::new([ok.clone() as DynReceiver, bad.clone() as DynReceiver])
            .with_metrics(FanoutMetrics::register(&mut registry));
        let err = f.append(profile()).now_or_never().unwrap().unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(ok.seen.lock().unwrap().len(), 1);
        assert_eq!(bad.seen.lock().unwrap().len(), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("pyroscope_fanout_latency_seconds_count{child=\"0\"} 1"));
        assert!(text.contains("pyroscope_fanout_failures_total{child=\"1\"} 1"));
        assert!(text.contains("pyroscope_forwarded_entries_total 0"));
    }

    #[test]
    fn children_run_concurrently() {
        let flag = Arc::new(AtomicUsize::new(0));
        let f = Fanout::new([
            Arc::new(WaitsFor(flag.clone())) as DynReceiver,
            Arc::new(Bumps(flag.clone())) as DynReceiver,
        ]);
        futures_executor::block_on(f.append(profile())).unwrap();
    }

    #[test]
    fn empty_fanout_accepts() {
        let f = Fanout::new([]);
        assert!(f.is_empty());
        assert!(f.append(profile()).now_or_never().unwrap().is_ok());
    }
}
