//! Delivery to one endpoint: the worker draining its queue, retries with backoff, and which
//! failures are retried.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyro_core::{SinkError, SinkErrorKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::config::RetryPolicy;
use crate::error::{DeliveryError, DropReason};

use super::queue::{EndpointShared, Item};

/// dskit-style backoff: delay `n` is uniform in `[min·2ⁿ, min·2ⁿ⁺¹)`, capped at `max`.
#[derive(Debug)]
pub(super) struct Backoff {
    pub(super) policy: RetryPolicy,
    pub(super) retries: u32,
    pub(super) rng: u64,
}

impl Backoff {
    pub(super) fn new(policy: RetryPolicy) -> Self {
        let rng = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            policy,
            retries: 0,
            rng,
        }
    }

    pub(super) fn random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The delay before the next retry, or `None` when the budget is spent.
    pub(super) fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let p = self.policy;
        if p.max_backoff_retries != 0 && self.retries >= p.max_backoff_retries {
            return None;
        }
        let base = p
            .min_backoff_period
            .saturating_mul(1u32 << self.retries.min(31))
            .min(p.max_backoff_period);
        let base_nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(self.random() % base_nanos.max(1));
        let delay = base.saturating_add(jitter).min(p.max_backoff_period);
        self.retries = self.retries.saturating_add(1);
        Some(match retry_after {
            Some(ra) => delay.max(ra.min(p.max_backoff_period)),
            None => delay,
        })
    }
}

/// Whether the writer retries this failure under `policy`.
pub(super) fn should_retry(e: &SinkError, policy: &RetryPolicy) -> bool {
    match e.kind {
        SinkErrorKind::Retryable { .. } => true,
        SinkErrorKind::RateLimited { .. } => policy.retry_on_http_429,
        _ => false,
    }
}

pub(super) async fn deliver(shared: Arc<EndpointShared>, item: Item, _slot: OwnedSemaphorePermit) {
    let mut backoff = Backoff::new(shared.retry);
    let mut attempts = 0u32;
    loop {
        attempts = attempts.saturating_add(1);
        let started = Instant::now();
        match shared.sink.send(&item.profile).await {
            Ok(()) => {
                shared
                    .latency_attempt
                    .observe(started.elapsed().as_secs_f64());
                shared
                    .latency_total
                    .observe(item.enqueued.elapsed().as_secs_f64());
                shared.sent_profiles.inc();
                shared.sent_bytes.inc_by(item.profile.raw.len() as u64);
                tracing::trace!(endpoint = %shared.name, attempts, "profile delivered");
                item.finish(Ok(()));
                return;
            }
            Err(e) => {
                let retry = should_retry(&e, &shared.retry);
                if retry && let Some(delay) = backoff.next_delay(e.retry_after()) {
                    shared.retries.inc();
                    tracing::debug!(
                        endpoint = %shared.name, attempts, ?delay, error = %e,
                        "push failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
                let reason = if retry {
                    DropReason::RetriesExhausted
                } else {
                    DropReason::Rejected
                };
                tracing::warn!(
                    endpoint = %shared.name, %reason, attempts, error = %e,
                    "profile dropped"
                );
                shared.count_drop(reason, item.profile.raw.len());
                let err = DeliveryError {
                    endpoint: shared.name.clone(),
                    reason,
                    attempts,
                    source: Some(e),
                };
                item.finish(Err(err));
                return;
            }
        }
    }
}

/// An endpoint's worker: takes items off the queue and delivers up to `concurrency` at once.
/// On shutdown it closes the queue and delivers what is left until the deadline, then drops the
/// rest (each drop counted). Returns whether it finished before the deadline.
pub(super) async fn work(
    shared: Arc<EndpointShared>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    concurrency: usize,
    mut shutdown: watch::Receiver<Option<tokio::time::Instant>>,
) -> bool {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut listening = true;
    let in_time = loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = until_deadline => break false,
            changed = shutdown.changed(), if listening => match changed {
                Ok(()) => {
                    if let Some(d) = *shutdown.borrow_and_update() {
                        // Take nothing new; deliver what is queued.
                        deadline = Some(d);
                        listening = false;
                        rx.close();
                    }
                }
                // The writer is gone: its queue senders too, so `recv` ends the loop once the
                // queue is drained.
                Err(_) => listening = false,
            },
            permit = slots.clone().acquire_owned(), if slot.is_none() => match permit {
                Ok(p) => slot = Some(p),
                Err(_) => break true,
            },
            item = rx.recv(), if slot.is_some() => match (item, slot.take()) {
                (Some(item), Some(slot)) => {
                    tasks.spawn(deliver(shared.clone(), item, slot));
                }
                _ => break true,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    };
    let in_time = in_time && {
        let all = async { while tasks.join_next().await.is_some() {} };
        match deadline {
            Some(d) => tokio::time::timeout_at(d, all).await.is_ok(),
            None => {
                all.await;
                true
            }
        }
    };
    // Abort what is left and wait until it is dropped, so that every drop is counted by the time
    // this returns; items still queued are dropped with `rx`.
    tasks.shutdown().await;
    drop(rx);
    in_time
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy {
            min_backoff_period: Duration::from_millis(100),
            max_backoff_period: Duration::from_millis(1000),
            max_backoff_retries: 6,
            retry_on_http_429: false,
        };
        let mut b = Backoff::new(policy);
        let delays: Vec<_> = std::iter::from_fn(|| b.next_delay(None)).collect();
        assert_eq!(delays.len(), 6);
        for (i, d) in delays.iter().enumerate() {
            let lo = Duration::from_millis(100 << i).min(policy.max_backoff_period);
            assert!(*d >= lo && *d <= policy.max_backoff_period, "{i}: {d:?}");
            if i < 3 {
                assert!(*d < lo * 2, "{i}: {d:?}");
            }
        }
        let mut b = Backoff::new(policy);
        assert_eq!(
            b.next_delay(Some(Duration::from_millis(700))),
            Some(Duration::from_millis(700))
        );
        // Retry-After is honoured up to the maximum period.
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(60))),
            Some(Duration::from_millis(1000))
        );
        let mut forever = Backoff::new(RetryPolicy {
            max_backoff_retries: 0,
            ..policy
        });
        assert!((0..100).all(|_| forever.next_delay(None).is_some()));
    }

    #[test]
    fn retry_classification() {
        let status = |code, status| {
            let e = crate::PushError::Status {
                endpoint: "e".into(),
                status,
                code,
                message: String::new(),
                retry_after: None,
            };
            SinkError::new("e", crate::endpoint::sink_error_kind(&e), e)
        };
        let p = RetryPolicy::default();
        let p429 = RetryPolicy {
            retry_on_http_429: true,
            ..p
        };
        assert!(!should_retry(
            &status(crate::ConnectCode::InvalidArgument, 400),
            &p
        ));
        assert!(should_retry(
            &status(crate::ConnectCode::Unavailable, 503),
            &p
        ));
        assert!(should_retry(&status(crate::ConnectCode::Unknown, 500), &p));
        assert!(!should_retry(
            &status(crate::ConnectCode::ResourceExhausted, 429),
            &p
        ));
        assert!(should_retry(
            &status(crate::ConnectCode::ResourceExhausted, 429),
            &p429
        ));
        assert!(!should_retry(
            &status(crate::ConnectCode::Unauthenticated, 401),
            &p429
        ));
        // A sink that is not a PushSink: its own flag decides.
        assert!(should_retry(&SinkError::retryable("x", "io"), &p));
        assert!(!should_retry(&SinkError::permanent("x", "bad"), &p429));
    }
}
