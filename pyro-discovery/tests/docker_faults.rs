//! `discovery.docker` when the daemon misbehaves: a local HTTP server speaking the Engine API
//! (Prometheus's fixture answers) that can switch to error statuses, garbage, truncated bodies
//! or going away. The last good set must stay, failures are counted, retries back off, and
//! nothing panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pyro_core::Discoverer;
use pyro_discovery::docker::{DockerConfig, DockerDiscoverer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/docker/prometheus"
);

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Good = 0,
    Status500 = 1,
    Status401 = 2,
    Garbage = 3,
    Truncated = 4,
    Fewer = 5,
}

struct Server {
    addr: String,
    mode: Arc<AtomicU8>,
    list_calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("tcp://{}", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(Mode::Good as u8));
        let list_calls = Arc::new(AtomicUsize::new(0));
        let containers = std::fs::read_to_string(format!("{FIXTURES}/containers.json")).unwrap();
        let networks = std::fs::read_to_string(format!("{FIXTURES}/networks.json")).unwrap();
        let (m, calls) = (Arc::clone(&mode), Arc::clone(&list_calls));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (m, calls) = (Arc::clone(&m), Arc::clone(&calls));
                let (containers, networks) = (containers.clone(), networks.clone());
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
                    let path = line.split(' ').nth(1).unwrap_or("");
                    let mode = m.load(Ordering::SeqCst);
                    let ok = |body: &str| {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let resp = if path.ends_with("/version") {
                        ok(r#"{"ApiVersion":"1.41","Version":"20.10.24"}"#)
                    } else if path.contains("/containers/json") {
                        calls.fetch_add(1, Ordering::SeqCst);
                        match mode {
                            1 => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 22\r\nConnection: close\r\n\r\n{\"message\":\"boom now\"}".to_owned(),
                            2 => "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                            3 => ok("<html>not json</html>"),
                            4 => format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                                containers.len(),
                                &containers[..containers.len() / 2]
                            ),
                            5 => {
                                let mut v: Vec<serde_json::Value> = serde_json::from_str(&containers).unwrap();
                                v.truncate(1);
                                ok(&serde_json::to_string(&v).unwrap())
                            }
                            _ => ok(&containers),
                        }
                    } else if path.contains("/networks") {
                        ok(&networks)
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_owned()
                    };
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self {
            addr,
            mode,
            list_calls,
            task,
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

fn discoverer(host: &str, refresh: &str) -> DockerDiscoverer {
    let config: DockerConfig =
        serde_json::from_value(serde_json::json!({"host": host, "refresh_interval": refresh}))
            .unwrap();
    DockerDiscoverer::new(config).unwrap()
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the stream in a task (a discoverer works as it is polled) and hands on its sets.
fn forward(d: &DockerDiscoverer) -> tokio::sync::mpsc::Receiver<Vec<pyro_core::Target>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut stream = d.subscribe();
    tokio::spawn(async move {
        while let Some(set) = stream.next().await {
            if tx.send(set).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_keep_the_last_good_set() {
    let server = Server::start().await;
    let d = discoverer(&server.addr, "100ms");
    let mut sets = forward(&d);
    let first = sets.recv().await.unwrap();
    assert_eq!(first.len(), 8, "Prometheus's TestDockerSDRefresh count");

    for mode in [
        Mode::Status500,
        Mode::Status401,
        Mode::Garbage,
        Mode::Truncated,
    ] {
        server.set(mode);
        let failures = d.metrics().failures();
        wait_for(|| d.metrics().failures() >= failures + 2).await;
        // No set while failing: the consumer keeps `first`.
        assert!(
            sets.try_recv().is_err(),
            "a failing refresh must not replace the set"
        );
    }

    // Good again, with one container left: the new set comes through.
    server.set(Mode::Fewer);
    let next = tokio::time::timeout(Duration::from_secs(20), sets.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.len(), 1);

    // The daemon goes away: the set stays, failures are counted.
    server.task.abort();
    let before = d.metrics().failures();
    wait_for(|| d.metrics().failures() > before).await;
    assert!(sets.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off() {
    let server = Server::start().await;
    server.set(Mode::Status500);
    // refresh_interval 4 s: retries after 1 s, 2 s, 4 s, 4 s … rather than every 100 ms.
    let d = discoverer(&server.addr, "4s");
    let mut stream = d.subscribe();
    // Nothing good yet: an empty first set, so consumers are not kept waiting.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_empty());
    let t0 = Instant::now();
    let calls0 = server.list_calls.load(Ordering::SeqCst);
    tokio::spawn(async move { while stream.next().await.is_some() {} });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let calls = server.list_calls.load(Ordering::SeqCst) - calls0;
    // In 3.5 s after the first failure: the retries at +1 s and +3 s (then +7 s).
    assert!(
        (1..=3).contains(&calls),
        "{calls} retries in {:?}: expected a doubling backoff",
        t0.elapsed()
    );
}

#[tokio::test]
async fn unreachable_daemon() {
    // A port nothing listens on, and a socket that does not exist.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    for host in [addr.as_str(), "unix:///nonexistent/pyro/docker.sock"] {
        let d = discoverer(host, "1m");
        let first = tokio::time::timeout(Duration::from_secs(10), d.subscribe().next())
            .await
            .unwrap()
            .unwrap();
        assert!(first.is_empty());
        assert_eq!(d.metrics().failures(), 1);
        let e = d.refresh().await.unwrap_err();
        assert_eq!(
            e.api_kind(),
            Some(pyro_discovery::docker::ApiErrorKind::Unreachable),
            "{host}: {e}"
        );
    }
}
