//! The one lifecycle every pyro stage follows: how background work starts, flushes and stops.
//!
//! **Starting.** A stage with background work (the eBPF collector, the Pyroscope writer, the
//! HTTP server, a discovery feed) is built by its builder into a pair — a cloneable *handle* and
//! a *future* — as tower's `Buffer::pair` does. The host spawns the future on the runtime it
//! chooses; nothing is spawned behind its back, and no constructor needs a runtime.
//!
//! **Flushing and stopping** follow opentelemetry-rust's processors and exporters: every
//! [`Receiver`] and every handle has
//!
//! - `flush(deadline)`: deliver everything accepted so far, waiting at most until `deadline`;
//! - `shutdown(deadline)`: stop taking new work, deliver what is pending, then pass
//!   `shutdown(deadline)` on to the stages downstream (`forward_to`), and return when all of it
//!   is done or the deadline has passed. It is idempotent; afterwards `append` fails with
//!   [`AppendError::Shutdown`].
//!
//! Stages that only forward ([`Fanout`](crate::Fanout), the enricher, relabelling) pass both
//! calls on to their children, so calling `shutdown` on the *first* stage of a pipeline shuts
//! the whole pipeline down in order, delivering what was collected, with no hand-written
//! sequencing. A receiver fed by several upstreams is wrapped in [`SharedShutdown`], which
//! passes the shutdown on only when the last upstream has shut down.
//!
//! Dropping every handle of a background stage stops it too (after a last delivery), but does
//! not propagate; `shutdown` is the call that does.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;

use crate::profile::Profile;
use crate::receiver::{AppendError, BoxError, DynReceiver, Receiver};

/// A `flush` or `shutdown` did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The deadline passed before everything was delivered.
    #[error("{stage}: deadline passed with {pending} profiles undelivered")]
    DeadlineExceeded {
        /// The stage that gave up.
        stage: String,
        /// Profiles (or requests) it still held.
        pending: usize,
    },
    /// Delivering failed for another reason.
    #[error("{stage}: {source}")]
    Failed {
        /// The stage that failed.
        stage: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// Several stages failed (a fan-out's children).
    #[error("{} stages failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<LifecycleError>),
}

impl LifecycleError {
    /// Joins results: no error gives `Ok`, one gives itself, more give
    /// [`LifecycleError::Multiple`] (flattened).
    pub fn join(results: impl IntoIterator<Item = Result<(), LifecycleError>>) -> Result<(), Self> {
        let mut flat = Vec::new();
        for r in results {
            match r {
                Ok(()) => {}
                Err(Self::Multiple(inner)) => flat.extend(inner),
                Err(e) => flat.push(e),
            }
        }
        match flat.len() {
            0 => Ok(()),
            1 => Err(flat.remove(0)),
            _ => Err(Self::Multiple(flat)),
        }
    }
}

/// What every handle of a background stage offers (the collector's, the writer's, the
/// server's, a discovery feed's), so a host can hold them side by side as `Arc<dyn Stage>`.
#[async_trait]
pub trait Stage: Send + Sync + fmt::Debug {
    /// Delivers everything accepted so far, waiting at most until `deadline`.
    async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError>;

    /// Stops the stage, delivers what is pending and shuts down what it forwards to.
    async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError>;
}

/// A receiver fed by several upstream stages: each upstream's `shutdown` is counted, and only
/// the last one is passed on (earlier ones flush instead), so one upstream stopping does not
/// close the downstream under the others.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use pyro_core::lifecycle::SharedShutdown;
/// use pyro_core::{DynReceiver, Receiver};
/// # #[derive(Debug)] struct Discard;
/// # #[pyro_core::async_trait] impl Receiver for Discard {
/// #     async fn append(&self, _: pyro_core::Profile) -> Result<(), pyro_core::AppendError> { Ok(()) }
/// # }
/// let writer: DynReceiver = Arc::new(Discard);
/// let shared: DynReceiver = Arc::new(SharedShutdown::new(writer, 2));
/// let deadline = Instant::now() + Duration::from_secs(1);
/// futures_executor::block_on(shared.shutdown(deadline)).unwrap(); // the first upstream
/// futures_executor::block_on(shared.shutdown(deadline)).unwrap(); // the last: passed on
/// ```
#[derive(Debug)]
pub struct SharedShutdown {
    inner: DynReceiver,
    remaining: AtomicUsize,
}

impl SharedShutdown {
    /// Wraps `inner`, fed by `upstreams` stages.
    pub fn new(inner: DynReceiver, upstreams: usize) -> Self {
        Self {
            inner,
            remaining: AtomicUsize::new(upstreams.max(1)),
        }
    }
}

#[async_trait]
impl Receiver for SharedShutdown {
    async fn append(&self, profile: Profile) -> Result<(), AppendError> {
        self.inner.append(profile).await
    }

    async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.inner.flush(deadline).await
    }

    async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        let before = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if before == 1 {
            self.inner.shutdown(deadline).await
        } else {
            self.inner.flush(deadline).await
        }
    }
}

/// Passes `shutdown` on to a list of downstream receivers concurrently and joins their errors:
/// what every stage does after delivering its own pending work.
pub async fn shutdown_all(
    receivers: &[DynReceiver],
    deadline: Instant,
) -> Result<(), LifecycleError> {
    let calls = receivers.iter().map(|r| r.shutdown(deadline));
    LifecycleError::join(futures_util::future::join_all(calls).await)
}

/// Passes `flush` on to a list of downstream receivers concurrently and joins their errors.
pub async fn flush_all(receivers: &[DynReceiver], deadline: Instant) -> Result<(), LifecycleError> {
    let calls = receivers.iter().map(|r| r.flush(deadline));
    LifecycleError::join(futures_util::future::join_all(calls).await)
}

/// A cheap, cloneable stop signal for the future of a background stage: `trigger` from the
/// handle, `wait` (or `is_triggered`) in the future. Runtime-free.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    stopped: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl StopSignal {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Triggers the signal; every `wait` completes.
    pub fn trigger(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Completes once the signal is triggered. One waiting task per signal is supported (the
    /// stage's own future); clone the signal for the handle side.
    pub async fn wait(&self) {
        futures_util::future::poll_fn(|cx| {
            if self.is_triggered() {
                return std::task::Poll::Ready(());
            }
            self.inner.waker.register(cx.waker());
            if self.is_triggered() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Calls(Mutex<Vec<&'static str>>);

    #[async_trait]
    impl Receiver for Calls {
        async fn append(&self, _: Profile) -> Result<(), AppendError> {
            Ok(())
        }
        async fn flush(&self, _: Instant) -> Result<(), LifecycleError> {
            self.0.lock().unwrap().push("flush");
            Ok(())
        }
        async fn shutdown(&self, _: Instant) -> Result<(), LifecycleError> {
            self.0.lock().unwrap().push("shutdown");
            Ok(())
        }
    }

    #[test]
    fn shared_shutdown_passes_on_only_the_last() {
        let calls = Arc::new(Calls::default());
        let shared = SharedShutdown::new(calls.clone(), 3);
        let now = Instant::now();
        for _ in 0..4 {
            futures_executor::block_on(shared.shutdown(now)).unwrap();
        }
        assert_eq!(
            *calls.0.lock().unwrap(),
            ["flush", "flush", "shutdown", "flush"]
        );
    }

    #[test]
    fn join_flattens() {
        let e = |s: &str| LifecycleError::Failed {
            stage: s.into(),
            source: "x".into(),
        };
        assert!(LifecycleError::join([Ok(()), Ok(())]).is_ok());
        let one = LifecycleError::join([Ok(()), Err(e("a"))]).unwrap_err();
        assert!(matches!(one, LifecycleError::Failed { .. }));
        let many = LifecycleError::join([
            Err(LifecycleError::Multiple(vec![e("a"), e("b")])),
            Err(e("c")),
        ])
        .unwrap_err();
        assert!(
            matches!(&many, LifecycleError::Multiple(v) if v.len() == 3),
            "{many}"
        );
    }

    #[test]
    fn stop_signal_wakes_the_waiter() {
        let s = StopSignal::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || futures_executor::block_on(s2.wait()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.trigger();
        t.join().unwrap();
        assert!(s.is_triggered());
    }
}
