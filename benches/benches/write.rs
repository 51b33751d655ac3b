//! pyro-write: pushes per second of a 10 KB profile to a loopback server, and the latency the
//! Writer adds over a bare HTTP POST of the same body.
//!
//! `cargo bench -p pyro-benches --bench write`. Besides criterion's output this prints the
//! p50/p99 latencies (criterion reports means and medians only).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pyro_core::pprof::{ProfileBuilder, encode_gzip};
use pyro_core::{Labels, Profile, Receiver};
use pyro_write::{AppendMode, Compression, EndpointConfig, PushSink, Writer};

/// A loopback server on its own thread and runtime that counts requests and answers 200.
fn server() -> (SocketAddr, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (s, _) = l.accept().await.unwrap();
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let c = c.clone();
                        async move {
                            let _ = req.into_body().collect().await?;
                            c.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    (rx.recv().unwrap(), count)
}

/// A CPU profile whose gzipped pprof is about 10 KB.
fn profile_10k() -> Profile {
    let build = |stacks: u64| {
        let mut b = ProfileBuilder::cpu(97);
        let period = b.period();
        for i in 0..stacks {
            let frames: Vec<String> = (0..12)
                .map(|d| {
                    format!(
                        "pkg{}::module{}::function_{}",
                        (i + d) % 37,
                        d,
                        (i * 7 + d) % 101
                    )
                })
                .collect();
            b.add_folded(&frames, &[((i % 13) as i64 + 1) * period]);
        }
        encode_gzip(&b.build(), 1)
    };
    let raw = (1..)
        .map(|k| build(k * 20))
        .find(|raw| raw.len() >= 10_000)
        .unwrap();
    Profile::new(
        Labels::from_iter([
            ("__name__", "process_cpu"),
            ("service_name", "bench"),
            ("namespace", "default"),
            ("pod", "bench-7d9f"),
        ]),
        raw,
    )
}

fn endpoint(addr: SocketAddr, compression: Compression) -> EndpointConfig {
    let mut e = EndpointConfig::new(format!("http://{addr}"));
    e.compression = compression;
    e
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, count) = server();
    let profile = profile_10k();
    {
        let gz = PushSink::new(&endpoint(addr, Compression::Gzip)).unwrap();
        let auto = PushSink::new(&endpoint(addr, Compression::Auto)).unwrap();
        eprintln!(
            "profile: {} bytes of gzipped pprof; request body {} bytes as is, {} bytes gzipped",
            profile.raw.len(),
            auto.encode_body(&profile).len(),
            gz.encode_body(&profile).len()
        );
    }

    let mut group = c.benchmark_group("write");
    group.throughput(Throughput::Elements(1));
    for (name, compression) in [
        ("push_10k_gzip", Compression::Gzip),
        ("push_10k_auto", Compression::Auto),
    ] {
        let writer = rt.block_on(async {
            let config = pyro_write::WriterConfig {
                endpoints: vec![endpoint(addr, compression)],
                ..Default::default()
            };
            Writer::builder(config).spawn().unwrap()
        });
        // Throughput: append n profiles (queued; default concurrency 8) and wait until the
        // server has received them all.
        group.bench_function(name, |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let target = count.load(Ordering::Relaxed) + n;
                    let start = Instant::now();
                    for _ in 0..n {
                        writer.append(profile.clone()).await.unwrap();
                    }
                    while count.load(Ordering::Relaxed) < target {
                        tokio::time::sleep(Duration::from_micros(50)).await;
                    }
                    start.elapsed()
                })
            });
        });
        let _ = rt.block_on(writer.shutdown(std::time::Instant::now() + Duration::from_secs(5)));
    }
    group.finish();

    // Latency: one push at a time, through the Writer (waiting for delivery) and as a bare
    // hyper POST of the same pre-encoded body on a pooled client.
    let mut group = c.benchmark_group("write_latency");
    let (writer, body, bare, uri) = rt.block_on(async {
        let config = pyro_write::WriterConfig {
            endpoints: vec![endpoint(addr, Compression::Auto)],
            append_mode: AppendMode::WaitForDelivery,
            ..Default::default()
        };
        let writer = Writer::builder(config).spawn().unwrap();
        let sink = PushSink::new(&endpoint(addr, Compression::Auto)).unwrap();
        let body = sink.encode_body(&profile);
        let bare: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        (writer, body, bare, sink.uri().clone())
    });
    let post = |body: Bytes| {
        let req = hyper::Request::post(uri.clone())
            .header("content-type", "application/proto")
            .body(Full::new(body))
            .unwrap();
        let fut = bare.request(req);
        async move {
            let resp = fut.await.unwrap();
            let _ = resp.into_body().collect().await.unwrap();
        }
    };
    group.bench_function("writer_append_wait", |b| {
        b.iter(|| rt.block_on(writer.append(profile.clone())).unwrap());
    });
    group.bench_function("bare_hyper_post", |b| {
        b.iter(|| rt.block_on(post(body.clone())));
    });
    group.finish();

    // p50/p99 over sequential pushes.
    let n = 3000;
    let (w, h) = rt.block_on(async {
        let mut w = Vec::with_capacity(n);
        let mut h = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            writer.append(profile.clone()).await.unwrap();
            w.push(t.elapsed());
            let t = Instant::now();
            post(body.clone()).await;
            h.push(t.elapsed());
        }
        (w, h)
    });
    let (w50, w99) = percentiles(w);
    let (h50, h99) = percentiles(h);
    eprintln!(
        "latency over {n} sequential pushes: writer p50 {w50:?} p99 {w99:?}; bare hyper POST p50 \
         {h50:?} p99 {h99:?}; added p50 {:?} p99 {:?}",
        w50.saturating_sub(h50),
        w99.saturating_sub(h99)
    );
    let _ = rt.block_on(writer.shutdown(std::time::Instant::now() + Duration::from_secs(5)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
