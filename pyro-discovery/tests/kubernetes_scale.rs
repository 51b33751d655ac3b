//! `discovery.kubernetes` with 10 000 pods: memory after the initial list, and CPU per watch
//! event (each event yields a complete new target set). A measurement for BENCHMARKS.md, not an
//! assertion on speed: run it with
//! `cargo test --release -p pyro-discovery --test kubernetes_scale -- --ignored --nocapture`.
//! Without `--ignored` it checks only that a set of 10 000 pods comes through whole.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pyro_core::Discoverer;
use pyro_discovery::kubernetes::{KubernetesConfig, KubernetesDiscoverer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PODS: usize = 10_000;

fn pod(i: usize, rv: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{i}"), "namespace": format!("ns-{}", i % 50),
                     "uid": format!("uid-{i}"), "resourceVersion": rv.to_string(),
                     "labels": {"app": "web", "pod-template-hash": "7d9f8c", "tier": "frontend"},
                     "annotations": {"prometheus.io/scrape": "true"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "name": "web-7d9f8c", "uid": "rs", "controller": true}]},
        "spec": {"nodeName": format!("node-{}", i % 100), "containers": [
            {"name": "app", "image": "registry/web:1.2.3",
             "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]},
            {"name": "sidecar", "image": "registry/proxy:2"}]},
        "status": {"podIP": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                   "hostIP": "192.168.0.1", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [
                       {"name": "app", "containerID": format!("containerd://{:064x}", i),
                        "image": "", "imageID": "", "ready": true, "restartCount": 0},
                       {"name": "sidecar", "containerID": format!("containerd://{:064x}", i + (1 << 20)),
                        "image": "", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_THREAD is valid on Linux.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

/// Serves a list of `PODS` pods, then a watch of `events` pre-encoded MODIFIED lines, one
/// every `gap`.
async fn server(events: Vec<String>, gap: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let items: Vec<Value> = (0..PODS).map(|i| pod(i, i + 1)).collect();
    let list = json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": PODS.to_string()}, "items": items})
    .to_string();
    tokio::spawn(async move {
        let mut events = Some(events);
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            if String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .contains("watch=true")
            {
                let lines = events.take().unwrap_or_default();
                tokio::spawn(async move {
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                        .await;
                    for l in lines {
                        tokio::time::sleep(gap).await;
                        if sock.write_all(l.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(600)).await;
                });
            } else {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    list.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(list.as_bytes()).await;
            }
        }
    });
    url
}

async fn run(events: usize, gap: Duration) {
    let lines: Vec<String> = (0..events)
        .map(|e| {
            let mut p = pod(e % PODS, PODS + 1 + e);
            p["metadata"]["labels"]["rev"] = json!(e.to_string());
            format!("{}\n", json!({"type": "MODIFIED", "object": p}))
        })
        .collect();
    let rss0 = rss_kib();
    let url = server(lines, gap).await;
    let config: KubernetesConfig =
        serde_json::from_value(json!({"role": "pod", "api_server": url})).unwrap();
    let d = KubernetesDiscoverer::new(config).unwrap();
    let mut s = d.subscribe();
    let t0 = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(120), s.next())
        .await
        .unwrap()
        .unwrap();
    let listed = t0.elapsed();
    // Two containers per pod, one target each.
    assert_eq!(first.len(), 2 * PODS);
    let rss_listed = rss_kib();
    drop(first);
    if events == 0 {
        return;
    }
    let (cpu0, t1) = (cpu_time(), Instant::now());
    let mut sets = 0;
    let mut last_rev = String::new();
    while last_rev != (events - 1).to_string() {
        let set = tokio::time::timeout(Duration::from_secs(120), s.next())
            .await
            .unwrap()
            .unwrap();
        sets += 1;
        assert_eq!(set.len(), 2 * PODS);
        last_rev = set
            .iter()
            .filter_map(|t| t.labels().get("__meta_kubernetes_pod_label_rev"))
            .max_by_key(|r| r.parse::<usize>().unwrap_or(0))
            .unwrap_or_default()
            .to_owned();
    }
    let cpu = cpu_time() - cpu0;
    println!(
        "10k pods: initial list+set {listed:?}, RSS {} MiB -> {} MiB after the list (+{} MiB), \
         peak now {} MiB; {events} watch events -> {sets} sets in {:?}, CPU {:?} = {:?} per set",
        rss0 / 1024,
        rss_listed / 1024,
        rss_listed.saturating_sub(rss0) / 1024,
        rss_kib() / 1024,
        t1.elapsed(),
        cpu,
        cpu / sets.max(1),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_come_through_whole() {
    run(0, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md; run with --ignored --nocapture"]
async fn cpu_and_memory_per_watch_event() {
    run(200, Duration::from_millis(30)).await;
}
