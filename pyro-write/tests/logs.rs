//! Secrets never reach the logs, even at `trace` level with every failure path taken; and a
//! writer dropped without `shutdown` still delivers what it queued.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use pyro_core::Receiver;
use pyro_write::{AppendMode, BasicAuth, EndpointConfig, Writer, WriterConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();

    // Failing in every way: refused, retried, timed out, down.
    let server = TestServer::start(|i, _| match i % 3 {
        0 => Reply::connect_error(503, "unavailable", "try later"),
        1 => Reply::ok().after(Duration::from_secs(2)),
        _ => Reply::connect_error(401, "unauthenticated", "who are you"),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "pw-FILE-SECRET").unwrap();
    let mut a = EndpointConfig::new(server.url());
    a.retry = fast_retry();
    a.remote_timeout = Duration::from_millis(100);
    a.bearer_token = Some("BEARER-SECRET".into());
    a.headers.insert("X-Api-Key".into(), "HEADER-SECRET".into());
    let mut b = EndpointConfig::new(server.url());
    b.name = "b".into();
    b.retry = fast_retry();
    b.basic_auth = Some(BasicAuth {
        username: "user".into(),
        password: None,
        password_file: Some(pw_file),
    });
    let mut c = EndpointConfig::new(format!("http://{}", free_addr().await));
    c.retry = fast_retry();
    c.retry.max_backoff_retries = 2;
    c.basic_auth = Some(BasicAuth {
        username: "user".into(),
        password: Some("pw-INLINE-SECRET".into()),
        password_file: None,
    });
    let config = WriterConfig {
        endpoints: vec![a, b, c],
        append_mode: AppendMode::WaitForDelivery,
        ..WriterConfig::default()
    };
    let w = Writer::builder(config).spawn().unwrap();
    let _ = w.append(profile("svc", "x")).await;
    let _ = w
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
    assert!(server.count() >= 3);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("retrying"), "logs were captured: {text}");
    assert!(
        text.contains("try later"),
        "server messages are logged: {text}"
    );
    for secret in [
        "BEARER-SECRET",
        "HEADER-SECRET",
        "pw-FILE-SECRET",
        "pw-INLINE-SECRET",
        // base64 of "user:pw-INLINE-SECRET" and "user:pw-FILE-SECRET"
        "dXNlcjpwdy1JTkxJTkUtU0VDUkVU",
        "dXNlcjpwdy1GSUxFLVNFQ1JFVA",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the logs:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_writer_still_delivers_what_it_queued() {
    let server = TestServer::ok().await;
    let mut ep = EndpointConfig::new(server.url());
    ep.retry = fast_retry();
    let config = WriterConfig {
        endpoints: vec![ep],
        ..WriterConfig::default()
    };
    let w = Writer::builder(config).spawn().unwrap();
    for i in 0..10 {
        w.append(profile("svc", &i.to_string())).await.unwrap();
    }
    drop(w);
    server.wait_for(10, Duration::from_secs(10)).await;
}
