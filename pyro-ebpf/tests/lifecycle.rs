//! The collector as a host runs it: built with a registry, spawned, fed new targets while
//! running, reporting a process that exits mid-interval, and detaching when its handle drops.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prometheus_client::registry::Registry;
use pyro_core::DynReceiver;
use pyro_ebpf::{Collector, EbpfConfig, EbpfMetrics};

/// Open file descriptors of this process that are BPF programs, maps or links.
fn bpf_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("anon_inode:bpf"))
        .count()
}

fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[test]
fn loads_attaches_samples_and_detaches_on_drop() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let before = bpf_fds();
    let me = std::process::id();
    let mut collector = collector(EbpfConfig::default(), vec![pid_target(me, "self")]);
    assert!(bpf_fds() > before, "no BPF objects open after load");
    // Burn CPU in this process until samples of it arrive.
    let start = Instant::now();
    let mut profiled = 0;
    while profiled < 20 && start.elapsed() < Duration::from_secs(30) {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(100) {
            std::hint::black_box(spin.elapsed());
        }
        profiled += collector.poll().profiled;
    }
    assert!(profiled >= 20, "only {profiled} samples of this process");
    let counters = collector.kernel_counters();
    assert!(counters.sent >= profiled, "{counters:?}");
    assert_eq!(counters.ringbuf_full, 0, "{counters:?}");
    let profiles = collector.collect();
    let p = profile_of(&profiles, me).expect("a profile of this process");
    assert_eq!(p.labels.get("service_name"), Some("self"));
    assert_eq!(p.labels.get("__name__"), Some("process_cpu"));
    drop(collector);
    assert_eq!(bpf_fds(), before, "BPF objects left open after drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the guard only serializes this binary's tests; no task here takes it again"
)]
async fn run_loop_reports_exited_processes_and_follows_target_updates() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (Some(short_bin), Some(long_bin)) = (
        compile_c(dir.path(), "shortlived", &spinner_source("short")),
        compile_c(dir.path(), "longlived", &spinner_source("long")),
    ) else {
        return;
    };
    // Runs for 1.5 CPU-seconds and exits, well inside the first 4 s interval.
    let mut short = Workload::spawn(&short_bin, &["1.5"]);
    let mut long = Workload::spawn(&long_bin, &[]);
    let (short_pid, long_pid) = (short.pid(), long.pid());

    let recorder = Arc::new(Recorder::default());
    let mut registry = Registry::default();
    let before = bpf_fds();
    let (handle, run) = Collector::builder(EbpfConfig {
        collect_interval: Duration::from_secs(4),
        ..EbpfConfig::default()
    })
    .targets(vec![pid_target(short_pid, "short")])
    .forward_to([recorder.clone() as DynReceiver])
    .with_metrics(EbpfMetrics::register(&mut registry))
    .build()
    .unwrap();
    let task = tokio::spawn(run);
    short.go();
    long.go();
    tokio::task::spawn_blocking(move || short.wait())
        .await
        .unwrap();
    let exited_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;

    // The interval in which the short-lived process exited still reports it, symbolized; the
    // long-lived one is not a target yet.
    let mut reported = None;
    for _ in 0..4 {
        let batch = wait_for_profiles(&recorder).await;
        assert!(profile_of(&batch, long_pid).is_none());
        // Several intervals may have gone by: look at every profile of the process.
        reported = batch.into_iter().find(|p| {
            let pprof = decode(p);
            let (start, end) = (pprof.time_nanos, pprof.time_nanos + pprof.duration_nanos);
            p.labels.get("__process_pid__") == Some(short_pid.to_string().as_str())
                && start <= exited_at
                && exited_at <= end
        });
        if reported.is_some() {
            break;
        }
    }
    let p = reported.expect("a profile for the interval in which the process exited");
    assert!(
        has_path(&p, &["shortlived", "main", "work_short", "spin_short"]),
        "{:?}",
        stacks(&p)
    );
    check_with_go_pprof(&p, dir.path());

    handle.set_targets(vec![pid_target(long_pid, "long")]);
    let mut later = Vec::new();
    for _ in 0..3 {
        later = wait_for_profiles(&recorder).await;
        if profile_of(&later, long_pid).is_some() {
            break;
        }
    }
    let p = profile_of(&later, long_pid).expect("profile of the new target");
    assert_eq!(p.labels.get("service_name"), Some("long"));
    assert!(has_path(
        p,
        &["longlived", "main", "work_long", "spin_long"]
    ));

    let text = metrics_text(&registry);
    for line in [
        "pyroscope_ebpf_active_targets 1",
        "pyroscope_ebpf_profiling_sessions_total 1",
        "pyroscope_ebpf_profiling_sessions_failing_total 0",
        "pyroscope_ebpf_lost_samples_total{reason=\"ringbuf_full\"} 0",
    ] {
        assert!(text.contains(line), "no `{line}` in\n{text}");
    }
    for service in ["short", "long"] {
        let line = format!("pyroscope_ebpf_pprofs_total{{service_name=\"{service}\"}}");
        assert!(text.contains(&line), "no `{line}` in\n{text}");
    }

    // Dropping the handle stops the loop, flushes what was sampled since the last interval,
    // and detaches the program.
    let _ = recorder.take();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(handle);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run loop stops when the handle is dropped")
        .unwrap();
    let flushed = recorder.take();
    assert!(
        profile_of(&flushed, long_pid).is_some(),
        "the final flush reports the samples of the unfinished interval"
    );
    assert_eq!(
        bpf_fds(),
        before,
        "BPF objects left open after the run loop ended"
    );
    drop(long);
}

/// Waits (up to 20 s) for the next batch of profiles.
async fn wait_for_profiles(recorder: &Recorder) -> Vec<pyro_core::Profile> {
    let start = Instant::now();
    loop {
        let got = recorder.take();
        if !got.is_empty() || start.elapsed() > Duration::from_secs(20) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records what reaches it, and when it is flushed and shut down, in order.
#[derive(Debug, Default)]
struct Events(std::sync::Mutex<Vec<String>>);

#[pyro_core::async_trait]
impl pyro_core::Receiver for Events {
    async fn append(&self, p: pyro_core::Profile) -> Result<(), pyro_core::AppendError> {
        let pid = p.labels.get("__process_pid__").unwrap_or("-").to_owned();
        self.0.lock().unwrap().push(format!("append {pid}"));
        Ok(())
    }

    async fn flush(&self, _: Instant) -> Result<(), pyro_core::LifecycleError> {
        self.0.lock().unwrap().push("flush".into());
        Ok(())
    }

    async fn shutdown(&self, _: Instant) -> Result<(), pyro_core::LifecycleError> {
        self.0.lock().unwrap().push("shutdown".into());
        Ok(())
    }
}

/// The lifecycle every stage follows: `flush` delivers the interval so far without waiting for
/// `collect_interval`, `shutdown` delivers the rest, then shuts the receivers down, detaches,
/// and ends the run future; a second `shutdown` returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::await_holding_lock,
    reason = "the guard only serializes this binary's tests; no task here takes it again"
)]
async fn flush_and_shutdown_deliver_then_propagate_in_order() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = compile_c(dir.path(), "lifecycled", &spinner_source("life")) else {
        return;
    };
    let mut work = Workload::spawn(&bin, &[]);
    let pid = work.pid();
    let events = Arc::new(Events::default());
    let before = bpf_fds();
    // An interval far longer than the test: only flush and shutdown can deliver.
    let (handle, run) = Collector::builder(EbpfConfig {
        collect_interval: Duration::from_secs(600),
        ..EbpfConfig::default()
    })
    .targets(vec![pid_target(pid, "life")])
    .forward_to([events.clone() as DynReceiver])
    .build()
    .unwrap();
    let task = tokio::spawn(run);
    work.go();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deadline = || Instant::now() + Duration::from_secs(10);
    handle.flush(deadline()).await.expect("flush in time");
    let after_flush = events.0.lock().unwrap().clone();
    let append = format!("append {pid}");
    assert_eq!(
        after_flush.last().map(String::as_str),
        Some("flush"),
        "{after_flush:?}"
    );
    assert!(after_flush.contains(&append), "{after_flush:?}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.shutdown(deadline()).await.expect("shutdown in time");
    let all = events.0.lock().unwrap().clone();
    let tail = &all[after_flush.len()..];
    assert_eq!(tail, [append.clone(), "shutdown".to_owned()], "{all:?}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the run future ends after shutdown")
        .unwrap();
    assert_eq!(bpf_fds(), before, "BPF objects left open after shutdown");
    handle
        .shutdown(deadline())
        .await
        .expect("a second shutdown is a no-op");
    assert_eq!(events.0.lock().unwrap().len(), all.len());
    drop(work);
}
