//! The collector's run loop: polls the kernel side on a short timer, collects every
//! `collect_interval`, sends the profiles to `forward_to`; and the [`CollectorBuilder`] and
//! [`CollectorHandle`] that start and control it (the [lifecycle](pyro_core::lifecycle) every
//! pyro stage follows).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use futures_util::StreamExt;
use pyro_core::discoverer::TargetConsumer;
use pyro_core::lifecycle::{flush_all, shutdown_all};
use pyro_core::{
    DynReceiver, Fanout, LifecycleError, Profile, Receiver, Stage, Target, async_trait,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::collector::{Collector, Error};
use crate::config::EbpfConfig;
use crate::metrics::Metrics;

/// How often the ring buffer is drained by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Profiles sent at once to the receivers (Alloy uses at most 32 workers).
const SEND_CONCURRENCY: usize = 32;

impl Collector {
    /// A builder for a collector that runs on its own: it polls the kernel side on a short
    /// timer, builds the profiles every `collect_interval` and sends them to the receivers given
    /// to [`CollectorBuilder::forward_to`].
    pub fn builder(config: EbpfConfig) -> CollectorBuilder {
        CollectorBuilder {
            config,
            targets: Vec::new(),
            forward_to: Vec::new(),
            metrics: Metrics::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// Builds a running [`Collector`]: see [`Collector::builder`].
#[derive(Debug)]
pub struct CollectorBuilder {
    config: EbpfConfig,
    targets: Vec<Target>,
    forward_to: Vec<DynReceiver>,
    metrics: Metrics,
    poll_interval: Duration,
}

impl CollectorBuilder {
    /// What to profile at start: processes matched by `__process_pid__`, else by container id
    /// (`__container_id__`, `__meta_kubernetes_pod_container_id`, `__meta_docker_container_id`).
    /// Processes matching no target are not profiled. Replaced while running with
    /// [`CollectorHandle::set_targets`] (or fed by a discoverer with
    /// [`pyro_core::discoverer::feed`]).
    #[must_use]
    pub fn targets(mut self, targets: Vec<Target>) -> Self {
        self.targets = targets;
        self
    }

    /// Where the profiles go (Alloy's `forward_to`); each profile is sent to every receiver,
    /// and [`CollectorHandle::shutdown`] shuts them down after the last delivery.
    #[must_use]
    pub fn forward_to(mut self, receivers: impl IntoIterator<Item = DynReceiver>) -> Self {
        self.forward_to = receivers.into_iter().collect();
        self
    }

    /// Attaches the collector's metrics (see [`EbpfMetrics`](crate::EbpfMetrics)).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// How often the kernel's ring buffer is drained (default [`DEFAULT_POLL_INTERVAL`]). The
    /// kernel side never wakes the reader, so this bounds how long a sample waits.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Checks the config, loads and attaches the eBPF program, and returns a handle and the
    /// future that runs the collector. Spawn the future on a tokio runtime. It ends after
    /// [`CollectorHandle::shutdown`], or when every handle is dropped; either way after a last
    /// collection that forwards what was sampled since the previous one (the program is then
    /// detached).
    pub fn build(
        self,
    ) -> Result<(CollectorHandle, impl Future<Output = ()> + Send + 'static), Error> {
        let Self {
            config,
            targets,
            forward_to,
            metrics,
            poll_interval,
        } = self;
        if forward_to.is_empty() {
            tracing::warn!("eBPF collector built without forward_to: its profiles go nowhere.");
        }
        let collector = Collector::with_metrics(&config, &targets, metrics.clone())?;
        let (targets_tx, targets_rx) = watch::channel(targets);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let handle = CollectorHandle {
            targets: Arc::new(targets_tx),
            commands: commands_tx,
        };
        let run = run(Run {
            collector,
            targets: targets_rx,
            commands: commands_rx,
            forward_to: forward_to.into(),
            collect_interval: config.collect_interval,
            poll_interval,
            metrics,
        });
        Ok((handle, run))
    }
}

/// What the handle asks of the run loop.
#[derive(Debug)]
enum Command {
    /// Collect now, deliver, flush downstream; answer when done.
    Flush(Instant, oneshot::Sender<Result<(), LifecycleError>>),
    /// Collect a last time, deliver, shut downstream down, stop; answer when done.
    Shutdown(Instant, oneshot::Sender<Result<(), LifecycleError>>),
}

/// Controls a running collector. Cloneable; when the last clone is dropped the collector stops
/// after a last delivery (without shutting its receivers down: [`shutdown`](Self::shutdown)
/// does that).
#[derive(Debug, Clone)]
pub struct CollectorHandle {
    targets: Arc<watch::Sender<Vec<Target>>>,
    commands: mpsc::Sender<Command>,
}

impl CollectorHandle {
    /// Replaces the targets; only the latest value matters if several are set quickly.
    pub fn set_targets(&self, targets: Vec<Target>) {
        self.targets.send_replace(targets);
    }

    /// Builds and delivers the profiles of everything sampled so far, then flushes the
    /// receivers, waiting at most until `deadline`.
    pub async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.ask(deadline, Command::Flush).await
    }

    /// Stops sampling, delivers the last profiles, shuts the receivers down (in that order),
    /// and returns when all of it is done or `deadline` has passed. Idempotent.
    pub async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        self.ask(deadline, Command::Shutdown).await
    }

    async fn ask(
        &self,
        deadline: Instant,
        command: fn(Instant, oneshot::Sender<Result<(), LifecycleError>>) -> Command,
    ) -> Result<(), LifecycleError> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            // A collector that already stopped has nothing left to deliver.
            if self.commands.send(command(deadline, tx)).await.is_err() {
                return Ok(());
            }
            rx.await.unwrap_or(Ok(()))
        };
        match tokio::time::timeout_at(deadline.into(), asked).await {
            Ok(r) => r,
            Err(_) => Err(LifecycleError::DeadlineExceeded {
                stage: STAGE.into(),
                pending: 0,
            }),
        }
    }
}

#[async_trait]
impl Stage for CollectorHandle {
    async fn flush(&self, deadline: Instant) -> Result<(), LifecycleError> {
        CollectorHandle::flush(self, deadline).await
    }

    async fn shutdown(&self, deadline: Instant) -> Result<(), LifecycleError> {
        CollectorHandle::shutdown(self, deadline).await
    }
}

impl TargetConsumer for CollectorHandle {
    fn set_targets(&self, targets: Vec<Target>) {
        CollectorHandle::set_targets(self, targets);
    }
}

/// The stage's name in lifecycle errors.
const STAGE: &str = "pyroscope.ebpf";

/// Runs blocking collector work off the async threads, handing the collector back.
async fn blocking<T: Send + 'static>(
    collector: Box<Collector>,
    f: impl FnOnce(&mut Collector) -> T + Send + 'static,
) -> Option<(Box<Collector>, T)> {
    let res = tokio::task::spawn_blocking(move || {
        let mut collector = collector;
        let out = f(&mut collector);
        (collector, out)
    })
    .await;
    match res {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::error!(%error, "eBPF collector task failed; stopping.");
            None
        }
    }
}

/// Everything the run loop owns.
struct Run {
    collector: Collector,
    targets: watch::Receiver<Vec<Target>>,
    commands: mpsc::Receiver<Command>,
    forward_to: Arc<[DynReceiver]>,
    collect_interval: Duration,
    poll_interval: Duration,
    metrics: Metrics,
}

async fn run(run: Run) {
    use tokio::time::{MissedTickBehavior, interval, interval_at};

    let Run {
        collector,
        mut targets,
        mut commands,
        forward_to,
        collect_interval,
        poll_interval,
        metrics,
    } = run;
    let fanout = Fanout::new(forward_to.iter().cloned());
    let mut collector = Box::new(collector);
    let mut poll = interval(poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut collect = interval_at(
        tokio::time::Instant::now() + collect_interval,
        collect_interval,
    );
    collect.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sending: Option<tokio::task::JoinHandle<()>> = None;
    let mut stopped_by: Option<(Instant, oneshot::Sender<Result<(), LifecycleError>>)> = None;
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => {
                match command {
                    Some(Command::Shutdown(deadline, answer)) => {
                        stopped_by = Some((deadline, answer));
                        break;
                    }
                    Some(Command::Flush(deadline, answer)) => {
                        if let Some(previous) = sending.take() {
                            let _ = previous.await;
                        }
                        let Some((c, profiles)) = blocking(collector, Collector::collect).await else {
                            return;
                        };
                        collector = c;
                        let timeout = deadline.saturating_duration_since(Instant::now());
                        send(fanout.clone(), profiles, timeout, metrics.clone()).await;
                        let _ = answer.send(flush_all(&forward_to, deadline).await);
                    }
                    // Every handle is gone.
                    None => break,
                }
            }
            changed = targets.changed() => {
                if changed.is_err() {
                    break;
                }
                let new = targets.borrow_and_update().clone();
                let Some((c, ())) = blocking(collector, move |c| c.set_targets(&new)).await else {
                    return;
                };
                collector = c;
            }
            _ = collect.tick() => {
                let Some((c, profiles)) = blocking(collector, Collector::collect).await else {
                    return;
                };
                collector = c;
                tracing::debug!(profiles = profiles.len(), "eBPF profiles built.");
                if let Some(previous) = sending.take() {
                    // Bounded by its own timeout.
                    let _ = previous.await;
                }
                sending = Some(tokio::spawn(send(
                    fanout.clone(),
                    profiles,
                    collect_interval,
                    metrics.clone(),
                )));
            }
            _ = poll.tick() => {
                let Some((c, _)) = blocking(collector, Collector::poll).await else {
                    return;
                };
                collector = c;
            }
        }
    }
    // Stopping: deliver what was sampled since the last collection, so a host that stops the
    // profiler loses nothing, then detach (dropping the collector), then shut downstream down
    // if asked to.
    if let Some(previous) = sending.take() {
        let _ = previous.await;
    }
    let timeout = stopped_by
        .as_ref()
        .map_or(collect_interval, |(deadline, _)| {
            deadline.saturating_duration_since(Instant::now())
        });
    if let Some((c, profiles)) = blocking(collector, Collector::collect).await {
        drop(c);
        send(fanout, profiles, timeout, metrics).await;
    }
    if let Some((deadline, answer)) = stopped_by {
        let _ = answer.send(shutdown_all(&forward_to, deadline).await);
        // Later shutdown calls find the loop gone and return at once.
        commands.close();
        while let Ok(Command::Shutdown(_, a) | Command::Flush(_, a)) = commands.try_recv() {
            let _ = a.send(Ok(()));
        }
    }
    tracing::debug!("eBPF profiler stopped.");
}

/// Hands `profiles` to the receivers, at most [`SEND_CONCURRENCY`] at a time, within `timeout`;
/// profiles not handed over by then are counted as dropped.
async fn send(fanout: Fanout, profiles: Vec<Profile>, timeout: Duration, metrics: Metrics) {
    let total = profiles.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let sends = futures_util::stream::iter(profiles).for_each_concurrent(SEND_CONCURRENCY, |p| {
        let fanout = &fanout;
        let done = &done;
        async move {
            let service = p.service_name().unwrap_or_default().to_owned();
            if let Err(error) = fanout.append(p).await {
                tracing::warn!(service_name = service, %error, "Receivers refused an eBPF profile.");
            }
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    if tokio::time::timeout(timeout, sends).await.is_err() {
        let dropped = total.saturating_sub(done.load(std::sync::atomic::Ordering::Relaxed));
        metrics.pprofs_dropped.inc_by(dropped);
        tracing::warn!(dropped, "eBPF profiles not sent in time.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigError;

    #[test]
    fn build_rejects_invalid_config_before_loading_anything() {
        let mut registry = prometheus_client::registry::Registry::default();
        let err = Collector::builder(EbpfConfig {
            sample_rate: 0,
            ..EbpfConfig::default()
        })
        .with_metrics(Metrics::register(&mut registry))
        .build()
        .map(|_| ())
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Config(ConfigError::SampleRate { value: 0 })
        ));
        // Nothing was loaded, so no session was started or failed.
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("pyroscope_ebpf_profiling_sessions_total 0"),
            "{text}"
        );
    }
}
