//! [`Writer`]: the `Receiver` that applies the label policy and feeds one bounded queue per
//! endpoint, each drained by its own worker that retries on its own.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::SystemTime;

use futures_util::future::join_all;
use pyro_core::limits::{IngestLimits, LimitError, Rule};
use pyro_core::{AppendError, Labels, LifecycleError, Profile, Receiver, Sink, async_trait};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::{AppendMode, QueueConfig, RetryPolicy, WriterConfig};
use crate::endpoint::PushSink;
use crate::error::{ConfigError, DropReason};
use crate::metrics::{DropLabels, EndpointLabel, LatencyLabels, WriteMetrics};

mod delivery;
mod queue;

use delivery::work;
use queue::{EndpointQueue, EndpointShared};

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
/// pass [`Labels::validate_with`] the configured label limits. A profile that fails is refused
/// alone with [`AppendError::InvalidLabels`] and counted as dropped (`endpoint="-"`,
/// `reason="invalid_labels"`); it is sent nowhere.
///
/// **Ingest limits** ([`WriterConfig::limits`]): then the profile is checked against
/// Pyroscope's ingest limits (decompressed size, samples, ingestion window, sample type names,
/// label counts after sample labels are promoted, label lengths). One that breaks a limit is
/// refused alone with [`AppendError::InvalidProfile`] naming the rule, counted with
/// `endpoint="-"`, `reason=<rule>`, logged at `warn` once per rule, and sent nowhere.
///
/// **Queues.** Each endpoint has a bounded queue ([`QueueConfig`]: bytes and profiles) drained
/// by its own worker with up to `concurrency` pushes in flight, each retrying on its own with
/// exponential backoff ([`RetryPolicy`]). A profile holds its place in the queue until it is
/// delivered or dropped, so the limits bound the memory an endpoint can hold however long it is
/// down. When a queue is full, `append` waits up to the configured time for room or fails fast
/// ([`FullPolicy`](crate::FullPolicy)); either way the drop is counted (`reason="queue_full"`) and reported: the
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
    limits: IngestLimits,
    /// The rules already logged at `warn` (each cause once).
    logged: Mutex<BTreeSet<Rule>>,
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
            limits: config.limits,
            logged: Mutex::new(BTreeSet::new()),
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
        labels.validate_with(&self.limits.labels())?;
        Ok(labels)
    }

    /// Checks a profile (labels prepared) against the ingest limits; refusals are counted by
    /// rule and logged at `warn` once per rule.
    fn check_limits(&self, profile: &Profile) -> Result<(), AppendError> {
        let decoded = match pyro_core::pprof::decode(
            &profile.raw,
            pyro_core::pprof::DEFAULT_MAX_DECODED_SIZE,
        ) {
            Ok(p) => p,
            Err(pyro_core::pprof::PprofError::TooLarge { limit }) => {
                // Decoding stopped at its cap: over max_profile_size_bytes if that is lower.
                match self
                    .limits
                    .check_size(&profile.labels, limit.saturating_add(1))
                {
                    Err(e) => return Err(self.refuse_limit(profile, e)),
                    Ok(()) => {
                        self.refuse(DropReason::InvalidProfile, profile.raw.len());
                        return Err(AppendError::invalid_profile(
                            pyro_core::pprof::PprofError::TooLarge { limit },
                        ));
                    }
                }
            }
            Err(e) => {
                self.refuse(DropReason::InvalidProfile, profile.raw.len());
                tracing::debug!(labels = %profile.labels, error = %e, "profile refused: invalid pprof");
                return Err(AppendError::invalid_profile(e));
            }
        };
        self.limits
            .check(&profile.labels, &decoded, SystemTime::now())
            .map_err(|e| self.refuse_limit(profile, e))
    }

    fn refuse_limit(&self, profile: &Profile, e: LimitError) -> AppendError {
        let rule = e.rule();
        self.refuse(DropReason::Limit(rule), profile.raw.len());
        let first = self
            .logged
            .lock()
            .map(|mut seen| seen.insert(rule))
            .unwrap_or(false);
        if first {
            tracing::warn!(rule = %rule, error = %e, "profile refused: Pyroscope would reject it (further refusals for this rule are logged at debug)");
        } else {
            tracing::debug!(rule = %rule, error = %e, "profile refused: Pyroscope would reject it");
        }
        AppendError::invalid_profile(e)
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
        if self.limits != IngestLimits::disabled() {
            self.check_limits(&profile)?;
        } else if self.check_profiles {
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
