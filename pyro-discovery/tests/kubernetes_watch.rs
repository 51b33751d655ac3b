//! `discovery.kubernetes` against a local HTTP server that speaks the Kubernetes API's list and
//! watch protocol as the API reference gives it ("Efficient detection of changes": a list with
//! `metadata.resourceVersion`, then `?watch=true&resourceVersion=…` streaming one JSON
//! `{"type", "object"}` event per line, `BOOKMARK` events carrying only a resourceVersion, and an
//! `ERROR` event with a `410` `Status` when the version is too old). The server plays a script
//! and records the requests, so the test sees resume-from-bookmark, re-list after 410, errors
//! and backoff.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use pyro_core::{Discoverer, Target};
use pyro_discovery::kubernetes::{KubernetesConfig, KubernetesDiscoverer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scripted answer.
enum Answer {
    /// A complete JSON body with this status.
    Body(u16, String),
    /// A watch stream: these event lines, then the connection closes (or stays open).
    Watch(Vec<Value>, bool),
}

#[derive(Default)]
struct Script {
    lists: VecDeque<Answer>,
    watches: VecDeque<Answer>,
    requests: Vec<String>,
    heads: Vec<String>,
}

async fn serve(script: Arc<Mutex<Script>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                let answer = {
                    let mut s = script.lock().unwrap();
                    s.requests.push(target.clone());
                    s.heads.push(String::from_utf8_lossy(&req).to_lowercase());
                    if target.contains("watch=true") {
                        s.watches.pop_front()
                    } else {
                        s.lists.pop_front()
                    }
                };
                match answer {
                    Some(Answer::Body(code, body)) => {
                        let resp = format!(
                            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                    Some(Answer::Watch(events, keep_open)) => {
                        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        for e in events {
                            // Apart in time, so each event makes its own set (a burst of
                            // events that arrive together makes one).
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            let line = format!("{e}\n");
                            if sock.write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        if keep_open {
                            tokio::time::sleep(Duration::from_secs(600)).await;
                        }
                    }
                    // Nothing scripted: hang, as a stalled server would.
                    None => tokio::time::sleep(Duration::from_secs(600)).await,
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    url
}

fn pod(name: &str, rv: &str, cid: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "resourceVersion": rv, "labels": {"app": name}},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
        "status": {"podIP": "10.1.0.1", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "app", "containerID": format!("containerd://{cid}"),
                       "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

fn list(rv: &str, items: Vec<Value>) -> Answer {
    Answer::Body(
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv}, "items": items})
            .to_string(),
    )
}

fn names(set: &[Target]) -> Vec<String> {
    let mut v: Vec<String> = set
        .iter()
        .filter_map(|t| {
            t.labels()
                .get("__meta_kubernetes_pod_name")
                .map(str::to_owned)
        })
        .collect();
    v.sort();
    v
}

fn discoverer(url: &str) -> KubernetesDiscoverer {
    let config: KubernetesConfig = serde_json::from_value(json!({
        "role": "pod",
        "api_server": url,
        "bearer_token": "secret-token",
        "selectors": [{"role": "pod", "field": "spec.nodeName=n1"}],
    }))
    .unwrap();
    KubernetesDiscoverer::new(config).unwrap()
}

async fn next(s: &mut pyro_core::TargetStream) -> Vec<Target> {
    tokio::time::timeout(Duration::from_secs(30), s.next())
        .await
        .expect("a target set within 30 s")
        .expect("the stream goes on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_watch_bookmark_resume_and_relist_on_410() {
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let script = Arc::new(Mutex::new(Script::default()));
    {
        let mut s = script.lock().unwrap();
        s.lists.push_back(list("100", vec![pod("a", "90", &a)]));
        s.watches.push_back(Answer::Watch(
            vec![
                json!({"type": "ADDED", "object": pod("b", "101", &b)}),
                json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                       "metadata": {"resourceVersion": "105"}}}),
            ],
            false,
        ));
        s.watches.push_back(Answer::Watch(
            vec![json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "metadata": {}, "status": "Failure", "message": "too old resource version: 105 (150)",
                "reason": "Expired", "code": 410}})],
            false,
        ));
        s.lists.push_back(list("200", vec![pod("c", "190", &c)]));
        s.watches.push_back(Answer::Watch(
            vec![json!({"type": "MODIFIED", "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "c", "namespace": "shop", "uid": "uid-c", "resourceVersion": "201",
                             "labels": {"app": "c", "version": "2"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
                "status": {"podIP": "10.1.0.3", "phase": "Running"}}})],
            true,
        ));
    }
    let url = serve(Arc::clone(&script)).await;
    let d = discoverer(&url);
    let mut s = d.subscribe();

    let first = next(&mut s).await;
    assert_eq!(names(&first), ["a"]);
    let t = &first[0];
    assert_eq!(
        t.labels().get("__meta_kubernetes_pod_container_id"),
        Some(format!("containerd://{a}").as_str())
    );
    assert_eq!(t.container_id(), Some(a.as_str()));
    assert_eq!(t.service_name(), "ebpf/shop/app");
    assert_eq!(names(&next(&mut s).await), ["a", "b"]);
    // After the 410, the re-list is the whole truth: a and b are gone.
    assert_eq!(names(&next(&mut s).await), ["c"]);
    let updated = next(&mut s).await;
    assert_eq!(
        updated[0]
            .labels()
            .get("__meta_kubernetes_pod_label_version"),
        Some("2")
    );
    assert_eq!(
        updated[0].labels().get("__meta_kubernetes_pod_ip"),
        Some("10.1.0.3")
    );

    let requests = script.lock().unwrap().requests.clone();
    let lists: Vec<&String> = requests
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .collect();
    let watches: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("watch=true"))
        .collect();
    assert_eq!(lists.len(), 2, "{requests:#?}");
    assert!(watches.len() >= 3, "{requests:#?}");
    for r in &requests {
        assert!(r.starts_with("/api/v1/pods?"), "{r}");
        assert!(r.contains("fieldSelector=spec.nodeName%3Dn1"), "{r}");
    }
    assert!(watches[0].contains("resourceVersion=100"), "{}", watches[0]);
    assert!(
        watches[0].contains("allowWatchBookmarks=true"),
        "{}",
        watches[0]
    );
    // The second watch resumes from the bookmark, not from the list.
    assert!(watches[1].contains("resourceVersion=105"), "{}", watches[1]);
    assert!(watches[2].contains("resourceVersion=200"), "{}", watches[2]);
    assert_eq!(d.metrics().failures(), 1, "the 410 is counted");
    let heads = script.lock().unwrap().heads.clone();
    assert!(
        heads
            .iter()
            .all(|h| h.contains("authorization: bearer secret-token")),
        "{heads:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_garbage_are_retried_with_the_last_set_kept() {
    let a = "a".repeat(64);
    let script = Arc::new(Mutex::new(Script::default()));
    {
        let mut s = script.lock().unwrap();
        s.lists.push_back(Answer::Body(
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is down",
                   "reason": "InternalError", "code": 500}).to_string(),
        ));
        s.lists.push_back(Answer::Body(
            401,
            json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
            .to_string(),
        ));
        s.lists
            .push_back(Answer::Body(200, "{\"items\": [garbage".to_owned()));
        s.lists.push_back(list("100", vec![pod("a", "90", &a)]));
        // The watch sends a truncated event line, then drops; the watcher resumes from 100.
        s.watches.push_back(Answer::Watch(
            vec![json!("{\"type\": \"ADDED\", \"object\": {")],
            false,
        ));
        s.watches.push_back(Answer::Watch(vec![], true));
    }
    let url = serve(Arc::clone(&script)).await;
    let d = discoverer(&url);
    let mut s = d.subscribe();
    // Failing before anything was listed: an empty set first, so consumers are not kept waiting.
    assert!(next(&mut s).await.is_empty());
    assert_eq!(names(&next(&mut s).await), ["a"]);
    assert!(d.metrics().failures() >= 3, "{}", d.metrics().failures());
    // The truncated watch event does not replace the set.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .is_err()
    );
    let requests = script.lock().unwrap().requests.clone();
    // The retries happened with a backoff, not in a tight loop.
    assert!(requests.len() < 20, "{requests:#?}");
}
