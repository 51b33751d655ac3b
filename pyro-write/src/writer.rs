//! [`Writer`]: the `Receiver` that applies the label policy and feeds one bounded queue per
//! endpoint, each drained by its own worker that retries on its own.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use pyro_core::{
    AppendError, Labels, LifecycleError, Profile, Receiver, Sink, SinkError, SinkErrorKind,
    async_trait,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::{AppendMode, FullPolicy, QueueConfig, RetryPolicy, WriterConfig};
use crate::endpoint::PushSink;
use crate::error::{ConfigError, DeliveryError, DropReason};
use crate::metrics::{DropLabels, EndpointLabel, LatencyLabels, WriteMetrics};

/// A destination for a [`Writer`]: a [`Sink`] with the retry and queue settings for it.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The sink ([`PushSink`] for Pyroscope).
    pub sink: Arc<dyn Sink>,
    /// How to retry what it reports as retryable.
    pub retry: RetryPolicy,
    /// Its queue.
    pub queue: QueueConfig,
}

/// A snapshot of one endpoint's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStats {
    /// The endpoint's name.
    pub endpoint: String,
    /// Bytes held now (queued, in flight or waiting to be retried).
    pub held_bytes: usize,
    /// Profiles held now.
    pub held_profiles: usize,
    /// The most bytes ever held at once.
    pub peak_bytes: usize,
    /// The most profiles ever held at once.
    pub peak_profiles: usize,
    /// The byte limit ([`QueueConfig::max_bytes`]).
    pub max_bytes: usize,
    /// The profile limit ([`QueueConfig::max_profiles`]).
    pub max_profiles: usize,
}

/// Sends every profile it receives to one or more Pyroscope endpoints (`pyroscope.write`).
///
/// **Label policy** (before anything is queued): labels starting with `__` are dropped except
/// `__name__` and `__delta__`; `external_labels` are set over the profile's own; the result must
/// pass [`Labels::validate`]. A profile that fails is refused alone with
/// [`AppendError::InvalidLabels`] and counted as dropped (`endpoint="-"`,
/// `reason="invalid_labels"`); it is sent nowhere.
///
/// **Queues.** Each endpoint has a bounded queue ([`QueueConfig`]: bytes and profiles) drained
/// by its own worker with up to `concurrency` pushes in flight, each retrying on its own with
/// exponential backoff ([`RetryPolicy`]). A profile holds its place in the queue until it is
/// delivered or dropped, so the limits bound the memory an endpoint can hold however long it is
/// down. When a queue is full, `append` waits up to the configured time for room or fails fast
/// ([`FullPolicy`]); either way the drop is counted (`reason="queue_full"`) and reported: the
/// append fails with [`AppendError::ResourceExhausted`] naming the endpoints that dropped it.
/// The other endpoints still have it queued, so a caller that resends it duplicates it there.
///
/// **When `append` returns** ([`AppendMode`]): by default once the profile is queued for every
/// endpoint — a dead endpoint never delays the caller or the healthy endpoints. With
/// [`AppendMode::WaitForDelivery`] it returns once every endpoint delivered or gave up (Alloy's
/// behaviour), with the failures joined.
///
/// **Retries.** Only what can succeed later is retried: timeouts, connection failures, 5xx and
/// the Connect codes `unavailable`, `internal`, `unknown`, `deadline_exceeded`, `aborted`,
/// `data_loss`; `resource_exhausted`/429 only with `retry_on_http_429`, never sooner than the
/// server's `Retry-After`. Validation errors (400 and other 4xx) are never retried.
///
/// **Lifecycle** (the one every pyro stage follows, see [`pyro_core::lifecycle`]):
/// [`Writer::builder`] gives the writer and the future that runs its endpoint workers, for the
/// host to spawn on a tokio runtime ([`WriterBuilder::spawn`] does that on the current one).
/// [`Receiver::flush`] waits until every queue is empty; [`Receiver::shutdown`] refuses new
/// profiles and delivers what is queued until the deadline; what is left then is dropped and
/// counted (`reason="shutdown"`). Dropping the writer without calling it lets the workers
/// finish delivering in the background.
pub struct Writer {
    external_labels: Vec<(String, String)>,
    endpoints: Vec<EndpointQueue>,
    mode: AppendMode,
    closed: AtomicBool,
    shutdown: watch::Sender<Option<tokio::time::Instant>>,
    /// `Some(clean)` once every worker has finished.
    done: watch::Receiver<Option<bool>>,
    check_profiles: bool,
    metrics: WriteMetrics,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| &e.shared.name)
                    .collect::<Vec<_>>(),
            )
            .field("external_labels", &self.external_labels)
            .field("mode", &self.mode)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// What an endpoint's worker and its items share.
#[derive(Debug)]
struct EndpointShared {
    name: String,
    sink: Arc<dyn Sink>,
    retry: RetryPolicy,
    held_bytes: AtomicUsize,
    held_profiles: AtomicUsize,
    peak_bytes: AtomicUsize,
    peak_profiles: AtomicUsize,
    sent_bytes: Counter,
    sent_profiles: Counter,
    retries: Counter,
    latency_attempt: Histogram,
    latency_total: Histogram,
    queue_bytes: Gauge,
    queue_profiles: Gauge,
    metrics: WriteMetrics,
}

impl EndpointShared {
    fn count_drop(&self, reason: DropReason, bytes: usize) {
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
struct EndpointQueue {
    shared: Arc<EndpointShared>,
    queue: QueueConfig,
    bytes: Arc<Semaphore>,
    profiles: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Item>,
}

type Outcome = Result<(), DeliveryError>;

/// A profile held for one endpoint, with its place in the queue. Dropping an unfinished item
/// (shutdown, an aborted worker) counts it as dropped, so nothing disappears silently.
#[derive(Debug)]
struct Item {
    profile: Profile,
    size: usize,
    enqueued: Instant,
    done: Option<oneshot::Sender<Outcome>>,
    shared: Arc<EndpointShared>,
    finished: bool,
    _bytes: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

impl Item {
    fn finish(mut self, outcome: Outcome) {
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
fn cost(profile: &Profile) -> usize {
    profile.raw.len()
        + profile
            .labels
            .iter()
            .map(|l| l.name().len() + l.value().len())
            .sum::<usize>()
}

impl EndpointQueue {
    fn refuse(&self, reason: DropReason, profile: &Profile) -> DeliveryError {
        self.shared.count_drop(reason, profile.raw.len());
        tracing::warn!(endpoint = %self.shared.name, %reason, "profile dropped");
        DeliveryError {
            endpoint: self.shared.name.clone(),
            reason,
            attempts: 0,
            source: None,
        }
    }

    async fn enqueue(
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

    fn stats(&self) -> EndpointStats {
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

/// dskit-style backoff: delay `n` is uniform in `[min·2ⁿ, min·2ⁿ⁺¹)`, capped at `max`.
#[derive(Debug)]
struct Backoff {
    policy: RetryPolicy,
    retries: u32,
    rng: u64,
}

impl Backoff {
    fn new(policy: RetryPolicy) -> Self {
        let rng = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            policy,
            retries: 0,
            rng,
        }
    }

    fn random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The delay before the next retry, or `None` when the budget is spent.
    fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
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
fn should_retry(e: &SinkError, policy: &RetryPolicy) -> bool {
    match e.kind {
        SinkErrorKind::Retryable { .. } => true,
        SinkErrorKind::RateLimited { .. } => policy.retry_on_http_429,
        _ => false,
    }
}

async fn deliver(shared: Arc<EndpointShared>, item: Item, _slot: OwnedSemaphorePermit) {
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
async fn work(
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

/// Builds a [`Writer`]: see [`Writer::builder`].
#[derive(Debug)]
pub struct WriterBuilder {
    config: WriterConfig,
    sinks: Vec<SinkSpec>,
    metrics: WriteMetrics,
}

impl WriterBuilder {
    /// Adds sinks besides `config`'s endpoints (a custom transport, a test double), each with
    /// its own queue and retry policy.
    #[must_use]
    pub fn sinks(mut self, sinks: Vec<SinkSpec>) -> Self {
        self.sinks.extend(sinks);
        self
    }

    /// Attaches the writer's metrics (see [`WriteMetrics::register`]).
    #[must_use]
    pub fn with_metrics(mut self, metrics: WriteMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks the config and returns the writer (a cloneable handle that is the pipeline's
    /// [`Receiver`]) and the future that runs its endpoint workers; spawn it on a tokio runtime.
    /// Needs no runtime itself.
    pub fn build(
        self,
    ) -> Result<(Arc<Writer>, impl Future<Output = ()> + Send + 'static), ConfigError> {
        let (writer, workers, done) = Writer::assemble(self.config, self.sinks, self.metrics)?;
        let run = async move {
            let results = join_all(workers).await;
            let _ = done.send(Some(results.into_iter().all(|clean| clean)));
        };
        Ok((Arc::new(writer), run))
    }

    /// [`build`](Self::build), then spawns the workers on the current tokio runtime.
    pub fn spawn(self) -> Result<Arc<Writer>, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (writer, run) = self.build()?;
        runtime.spawn(run);
        Ok(writer)
    }
}

/// The stage's name in lifecycle errors.
const STAGE: &str = "pyroscope.write";

type Workers = Vec<std::pin::Pin<Box<dyn Future<Output = bool> + Send>>>;

impl Writer {
    /// A builder for a writer to `config`'s endpoints (one [`PushSink`] each).
    pub fn builder(config: WriterConfig) -> WriterBuilder {
        WriterBuilder {
            config,
            sinks: Vec::new(),
            metrics: WriteMetrics::default(),
        }
    }

    fn assemble(
        config: WriterConfig,
        extra_sinks: Vec<SinkSpec>,
        metrics: WriteMetrics,
    ) -> Result<(Self, Workers, watch::Sender<Option<bool>>), ConfigError> {
        let mut sinks = config
            .endpoints
            .iter()
            .map(|e| {
                Ok(SinkSpec {
                    sink: Arc::new(PushSink::new(e)?) as Arc<dyn Sink>,
                    retry: e.retry,
                    queue: e.queue,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        sinks.extend(extra_sinks);
        let external_labels = config.external_labels;
        let mode = config.append_mode;
        for (name, value) in &external_labels {
            let probe = Labels::from_iter([("__name__", "probe"), (name.as_str(), value.as_str())]);
            if let Err(source) = probe.validate() {
                return Err(ConfigError::ExternalLabel {
                    name: name.clone(),
                    source,
                });
            }
        }
        let (shutdown, _) = watch::channel(None);
        let mut endpoints = Vec::with_capacity(sinks.len());
        let mut workers: Workers = Vec::with_capacity(sinks.len());
        for spec in sinks {
            let name = spec.sink.name().to_owned();
            let q = spec.queue;
            let limit = |message: &str| ConfigError::InvalidLimit {
                endpoint: name.clone(),
                message: message.to_owned(),
            };
            if q.max_bytes == 0 || u32::try_from(q.max_bytes).is_err() {
                return Err(limit("queue.max_bytes must be between 1 and 4 GiB"));
            }
            if q.max_profiles == 0 || q.max_profiles > Semaphore::MAX_PERMITS {
                return Err(limit("queue.max_profiles must be positive"));
            }
            if q.concurrency == 0 || q.concurrency > Semaphore::MAX_PERMITS {
                return Err(limit("queue.concurrency must be positive"));
            }
            if spec.retry.min_backoff_period > spec.retry.max_backoff_period {
                return Err(limit(
                    "min_backoff_period must not exceed max_backoff_period",
                ));
            }
            let ep = EndpointLabel {
                endpoint: name.clone(),
            };
            let latency = |ty: &str| {
                metrics
                    .latency
                    .get_or_create(&LatencyLabels {
                        endpoint: name.clone(),
                        r#type: ty.to_owned(),
                    })
                    .clone()
            };
            let shared = Arc::new(EndpointShared {
                name: name.clone(),
                sink: spec.sink,
                retry: spec.retry,
                held_bytes: AtomicUsize::new(0),
                held_profiles: AtomicUsize::new(0),
                peak_bytes: AtomicUsize::new(0),
                peak_profiles: AtomicUsize::new(0),
                sent_bytes: metrics.sent_bytes.get_or_create(&ep).clone(),
                sent_profiles: metrics.sent_profiles.get_or_create(&ep).clone(),
                retries: metrics.retries.get_or_create(&ep).clone(),
                latency_attempt: latency("push_endpoint"),
                latency_total: latency("push_total"),
                queue_bytes: metrics.queue_bytes.get_or_create(&ep).clone(),
                queue_profiles: metrics.queue_profiles.get_or_create(&ep).clone(),
                metrics: metrics.clone(),
            });
            let (tx, rx) = mpsc::unbounded_channel();
            workers.push(Box::pin(work(
                shared.clone(),
                rx,
                q.concurrency,
                shutdown.subscribe(),
            )));
            endpoints.push(EndpointQueue {
                shared,
                queue: q,
                bytes: Arc::new(Semaphore::new(q.max_bytes)),
                profiles: Arc::new(Semaphore::new(q.max_profiles)),
                tx,
            });
        }
        let (done_tx, done) = watch::channel(None);
        let writer = Self {
            external_labels: external_labels.into_iter().collect(),
            endpoints,
            mode,
            closed: AtomicBool::new(false),
            shutdown,
            done,
            check_profiles: config.check_profiles,
            metrics,
        };
        Ok((writer, workers, done_tx))
    }

    /// Counts a profile refused before any endpoint.
    fn refuse(&self, reason: DropReason, bytes: usize) {
        let labels = DropLabels {
            endpoint: "-".into(),
            reason: reason.as_str().into(),
        };
        self.metrics.dropped_profiles.get_or_create(&labels).inc();
        self.metrics
            .dropped_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }

    /// Applies the label policy: drop `__` labels except `__name__`/`__delta__`, set external
    /// labels, validate.
    pub fn prepare_labels(&self, mut labels: Labels) -> Result<Labels, pyro_core::LabelError> {
        labels.drop_reserved();
        for (name, value) in &self.external_labels {
            labels.set(name.as_str(), value.as_str());
        }
        labels.validate()?;
        Ok(labels)
    }

    /// A snapshot of every endpoint's queue.
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.endpoints.iter().map(EndpointQueue::stats).collect()
    }

    /// Profiles held by every endpoint's queue (queued or in flight).
    fn held(&self) -> usize {
        self.endpoints
            .iter()
            .map(|e| e.shared.held_profiles.load(Ordering::Acquire))
            .sum()
    }
}

#[async_trait]
impl Receiver for Writer {
    /// Waits until every endpoint has delivered (or given up on) what it holds.
    async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError> {
        let drained = async {
            while self.held() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout_at(deadline.into(), drained)
            .await
            .map_err(|_| LifecycleError::DeadlineExceeded {
                stage: STAGE.into(),
                pending: self.held(),
            })
    }

    /// Refuses new profiles, then delivers what is queued until `deadline`; what is still held
    /// then is dropped (counted with `reason="shutdown"`). Calling it again returns at once.
    async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.closed.store(true, Ordering::Release);
        self.shutdown
            .send_if_modified(|d| d.replace(d.unwrap_or(deadline.into())).is_none());
        let mut done = self.done.clone();
        // The workers stop by the deadline on their own; a little grace lets them count the
        // drops before this returns.
        let grace = tokio::time::Instant::from(deadline) + Duration::from_millis(200);
        let clean = tokio::time::timeout_at(grace, done.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| *v))
            .unwrap_or(false);
        if clean {
            Ok(())
        } else {
            Err(LifecycleError::DeadlineExceeded {
                stage: STAGE.into(),
                pending: self.held(),
            })
        }
    }

    async fn append(&self, mut profile: Profile) -> Result<(), AppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppendError::Shutdown);
        }
        profile.labels = match self.prepare_labels(std::mem::take(&mut profile.labels)) {
            Ok(l) => l,
            Err(e) => {
                self.refuse(DropReason::InvalidLabels, profile.raw.len());
                tracing::debug!(error = %e, "profile refused: invalid labels");
                return Err(AppendError::InvalidLabels(e));
            }
        };
        if self.check_profiles {
            let checked =
                pyro_core::pprof::decode(&profile.raw, pyro_core::pprof::DEFAULT_MAX_DECODED_SIZE)
                    .and_then(|p| pyro_core::pprof::check_valid(&p));
            if let Err(e) = checked {
                self.refuse(DropReason::InvalidProfile, profile.raw.len());
                tracing::debug!(labels = %profile.labels, error = %e, "profile refused: invalid pprof");
                return Err(AppendError::invalid_profile(e));
            }
        }
        let wait = self.mode == AppendMode::WaitForDelivery;
        let queued = match self.endpoints.as_slice() {
            [] => return Ok(()),
            [one] => vec![one.enqueue(profile, wait).await],
            many => join_all(many.iter().map(|e| e.enqueue(profile.clone(), wait))).await,
        };
        let mut errors = Vec::new();
        let mut pending = Vec::new();
        for q in queued {
            match q {
                Ok(Some(rx)) => pending.push(rx),
                Ok(None) => {}
                Err(e) => errors.push(AppendError::from(e)),
            }
        }
        for outcome in join_all(pending).await {
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(AppendError::from(e)),
                Err(_) => errors.push(AppendError::Shutdown),
            }
        }
        match AppendError::join(errors) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
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
