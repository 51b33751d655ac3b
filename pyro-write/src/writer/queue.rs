//! One endpoint's bounded queue: what it holds, what each held profile costs, and how an
//! item counts itself dropped when it is not delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use pyro_core::{Profile, Sink};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config::{FullPolicy, QueueConfig, RetryPolicy};
use crate::error::{DeliveryError, DropReason};
use crate::metrics::{DropLabels, WriteMetrics};

use super::EndpointStats;

/// What an endpoint's worker and its items share.
#[derive(Debug)]
pub(super) struct EndpointShared {
    pub(super) name: String,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) retry: RetryPolicy,
    pub(super) held_bytes: AtomicUsize,
    pub(super) held_profiles: AtomicUsize,
    pub(super) peak_bytes: AtomicUsize,
    pub(super) peak_profiles: AtomicUsize,
    pub(super) sent_bytes: Counter,
    pub(super) sent_profiles: Counter,
    pub(super) retries: Counter,
    pub(super) latency_attempt: Histogram,
    pub(super) latency_total: Histogram,
    pub(super) queue_bytes: Gauge,
    pub(super) queue_profiles: Gauge,
    pub(super) metrics: WriteMetrics,
}

impl EndpointShared {
    pub(super) fn count_drop(&self, reason: DropReason, bytes: usize) {
        let labels = DropLabels {
            endpoint: self.name.clone(),
            reason: reason.as_str().to_owned(),
        };
        self.metrics.dropped_profiles.get_or_create(&labels).inc();
        self.metrics
            .dropped_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }
}

#[derive(Debug)]
pub(super) struct EndpointQueue {
    pub(super) shared: Arc<EndpointShared>,
    pub(super) queue: QueueConfig,
    pub(super) bytes: Arc<Semaphore>,
    pub(super) profiles: Arc<Semaphore>,
    pub(super) tx: mpsc::UnboundedSender<Item>,
}

pub(super) type Outcome = Result<(), DeliveryError>;

/// A profile held for one endpoint, with its place in the queue. Dropping an unfinished item
/// (shutdown, an aborted worker) counts it as dropped, so nothing disappears silently.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) profile: Profile,
    pub(super) size: usize,
    pub(super) enqueued: Instant,
    pub(super) done: Option<oneshot::Sender<Outcome>>,
    pub(super) shared: Arc<EndpointShared>,
    pub(super) finished: bool,
    pub(super) _bytes: OwnedSemaphorePermit,
    pub(super) _slot: OwnedSemaphorePermit,
}

impl Item {
    pub(super) fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        if let Some(tx) = self.done.take() {
            // The appender may have gone away; nothing to tell then.
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        let s = &self.shared;
        s.held_bytes.fetch_sub(self.size, Ordering::Relaxed);
        s.held_profiles.fetch_sub(1, Ordering::Relaxed);
        s.queue_bytes.dec_by(self.size as i64);
        s.queue_profiles.dec();
        if !self.finished {
            s.count_drop(DropReason::Shutdown, self.profile.raw.len());
            tracing::warn!(endpoint = %s.name, "profile dropped: writer shut down before delivery");
            if let Some(tx) = self.done.take() {
                let _ = tx.send(Err(DeliveryError {
                    endpoint: s.name.clone(),
                    reason: DropReason::Shutdown,
                    attempts: 0,
                    source: None,
                }));
            }
        }
    }
}

/// The bytes a profile holds in a queue: payload plus label strings.
pub(super) fn cost(profile: &Profile) -> usize {
    profile.raw.len()
        + profile
            .labels
            .iter()
            .map(|l| l.name().len() + l.value().len())
            .sum::<usize>()
}

impl EndpointQueue {
    pub(super) fn refuse(&self, reason: DropReason, profile: &Profile) -> DeliveryError {
        self.shared.count_drop(reason, profile.raw.len());
        tracing::warn!(endpoint = %self.shared.name, %reason, "profile dropped");
        DeliveryError {
            endpoint: self.shared.name.clone(),
            reason,
            attempts: 0,
            source: None,
        }
    }

    pub(super) async fn enqueue(
        &self,
        profile: Profile,
        wait: bool,
    ) -> Result<Option<oneshot::Receiver<Outcome>>, DeliveryError> {
        let enqueued = Instant::now();
        let size = cost(&profile);
        if size > self.queue.max_bytes {
            return Err(self.refuse(DropReason::TooLarge, &profile));
        }
        // `size <= max_bytes <= u32::MAX`, checked when the writer was built.
        let n = u32::try_from(size).unwrap_or(u32::MAX);
        let permits = match self.queue.when_full {
            FullPolicy::FailFast => self
                .bytes
                .clone()
                .try_acquire_many_owned(n)
                .ok()
                .and_then(|b| Some((b, self.profiles.clone().try_acquire_owned().ok()?))),
            FullPolicy::Wait(limit) => {
                let acquire = async {
                    let b = self.bytes.clone().acquire_many_owned(n).await.ok()?;
                    let p = self.profiles.clone().acquire_owned().await.ok()?;
                    Some((b, p))
                };
                tokio::time::timeout(limit, acquire).await.ok().flatten()
            }
        };
        let Some((bytes, slot)) = permits else {
            return Err(self.refuse(DropReason::QueueFull, &profile));
        };
        let s = &self.shared;
        let held = s.held_bytes.fetch_add(size, Ordering::Relaxed) + size;
        s.peak_bytes.fetch_max(held, Ordering::Relaxed);
        let count = s.held_profiles.fetch_add(1, Ordering::Relaxed) + 1;
        s.peak_profiles.fetch_max(count, Ordering::Relaxed);
        s.queue_bytes.inc_by(size as i64);
        s.queue_profiles.inc();
        let (done, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let item = Item {
            profile,
            size,
            enqueued,
            done,
            shared: s.clone(),
            finished: false,
            _bytes: bytes,
            _slot: slot,
        };
        if self.tx.send(item).is_err() {
            // The worker has stopped (shutdown); dropping the item counted it.
            return Err(DeliveryError {
                endpoint: s.name.clone(),
                reason: DropReason::Shutdown,
                attempts: 0,
                source: None,
            });
        }
        Ok(rx)
    }

    pub(super) fn stats(&self) -> EndpointStats {
        let s = &self.shared;
        EndpointStats {
            endpoint: s.name.clone(),
            held_bytes: s.held_bytes.load(Ordering::Relaxed),
            held_profiles: s.held_profiles.load(Ordering::Relaxed),
            peak_bytes: s.peak_bytes.load(Ordering::Relaxed),
            peak_profiles: s.peak_profiles.load(Ordering::Relaxed),
            max_bytes: self.queue.max_bytes,
            max_profiles: self.queue.max_profiles,
        }
    }
}
