//! pyro-receive: Push requests per second with a 10 KB profile over loopback (client and
//! server on this machine), one connection at a time and with 8 concurrent connections.
//!
//! `cargo bench -p pyro-benches --bench receive`. Each request is a real
//! `POST /push.v1.PusherService/Push` (`application/proto`, not compressed, as Alloy and
//! connect-go send it) that the server decodes, validates (labels and the pprof inside) and
//! forwards to a receiver that counts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use pyro_core::pprof::DEFAULT_MAX_DECODED_SIZE;
use pyro_core::pprof::{ProfileBuilder, encode_gzip};
use pyro_core::{AppendError, DynReceiver, Labels, Profile, Receiver};
use pyro_receive::push::{PushEncoding, PushRequest, parse_push};
use pyro_receive::{HttpConfig, ReceiveConfig, Server};

#[derive(Debug, Default)]
struct Count(AtomicU64);

#[pyro_core::async_trait]
impl Receiver for Count {
    async fn append(&self, _: Profile) -> Result<(), AppendError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A gzipped CPU pprof of about 10 KB that compresses like real ones do (the Go runtime's
/// profiles shrink 2-3x under gzip): distinct stacks over a pool of frames whose names carry
/// pseudo-random parts, as mangled or generic names do.
fn pprof_10k() -> (Vec<u8>, usize) {
    let build = |stacks: u64| {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        let pool: Vec<String> = (0..stacks * 3)
            .map(|i| {
                format!(
                    "pkg{}.(*T{:x}).method_{:08x}",
                    i % 13,
                    next() % 4096,
                    next()
                )
            })
            .collect();
        let mut b = ProfileBuilder::cpu(97);
        for i in 0..stacks {
            let frames: Vec<&str> = (0..12)
                .map(|_| pool[(next() % pool.len() as u64) as usize].as_str())
                .collect();
            b.add_folded(&frames, &[(i as i64 + 1) * b.period()]);
        }
        let p = b.build();
        (encode_gzip(&p, 1), pyro_core::pprof::encode(&p).len())
    };
    let mut stacks = 16;
    while build(stacks).0.len() < 10_000 {
        stacks += 4;
    }
    build(stacks)
}

fn push_body() -> Bytes {
    let (raw, plain) = pprof_10k();
    eprintln!("pprof: {} bytes gzipped, {plain} bytes plain", raw.len());
    let labels = [
        ("__name__", "process_cpu"),
        ("service_name", "checkout"),
        ("namespace", "shop"),
        ("pod", "checkout-7d9f8b6c5-x2x7q"),
    ];
    let labels = Labels::from_iter(labels);
    PushRequest::from_profile(&Profile::new(labels, raw))
        .encode_to_vec()
        .into()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let count = Arc::new(Count::default());
    let config = ReceiveConfig {
        http: HttpConfig {
            listen_address: "127.0.0.1".into(),
            listen_port: 0,
            ..HttpConfig::default()
        },
        ..ReceiveConfig::default()
    };
    let (handle, serve) = Server::new(config, vec![count.clone() as DynReceiver])
        .bind()
        .unwrap();
    let server = rt.spawn(serve);
    let url: hyper::Uri = format!("http://{}/push.v1.PusherService/Push", handle.local_addr())
        .parse()
        .unwrap();
    let body = push_body();
    eprintln!("push body: {} bytes", body.len());
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let push = |client: Client<HttpConnector, Full<Bytes>>, url: hyper::Uri, body: Bytes| async move {
        let req = hyper::Request::post(url)
            .header("content-type", "application/proto")
            .header("connect-protocol-version", "1")
            .body(Full::new(body))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    };

    let mut g = c.benchmark_group("receive_push_10kb");
    g.throughput(Throughput::Elements(1));
    // The server's own work per request without HTTP: decode, label checks, pprof check.
    g.bench_function("parse_only", |b| {
        b.iter(|| parse_push(body.clone(), PushEncoding::Proto, DEFAULT_MAX_DECODED_SIZE).unwrap());
    });
    g.bench_function("sequential", |b| {
        b.iter(|| rt.block_on(push(client.clone(), url.clone(), body.clone())));
    });
    const BATCH: u64 = 64;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("concurrent_8_connections", |b| {
        b.iter(|| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            rt.block_on(async move {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let (client, url, body) = (client.clone(), url.clone(), body.clone());
                        tokio::spawn(async move {
                            for _ in 0..BATCH / 8 {
                                push(client.clone(), url.clone(), body.clone()).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
    });
    g.finish();

    // A fixed run outside criterion: wall-clock rate, and the rate per CPU-second this
    // process (client and server together) spent, which does not depend on what else the
    // machine is running.
    const RUN: u64 = 8 * 1000;
    let (cpu0, wall0) = (cpu_seconds(), std::time::Instant::now());
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    for _ in 0..RUN / 8 {
                        push(client.clone(), url.clone(), body.clone()).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    eprintln!(
        "fixed run: {RUN} pushes over 8 connections in {wall:.2} s = {:.0}/s wall-clock; \
         {cpu:.2} CPU-s (client + server) = {:.0} pushes per CPU-second; load average {}",
        RUN as f64 / wall,
        RUN as f64 / cpu,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    handle.stop();
    rt.block_on(server).unwrap().unwrap();
    eprintln!("profiles received: {}", count.0.load(Ordering::Relaxed));
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (clock ticks of
/// 1/100 s, the Linux default).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

criterion_group!(benches, bench);
criterion_main!(benches);
