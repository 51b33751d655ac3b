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
use pyro_core::pprof::{ProfileBuilder, encode_gzip};
use pyro_core::{AppendError, DynReceiver, Profile, Receiver};
use pyro_receive::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
use pyro_receive::{Config, Server};

#[derive(Debug, Default)]
struct Count(AtomicU64);

#[pyro_core::async_trait]
impl Receiver for Count {
    async fn append(&self, _: Profile) -> Result<(), AppendError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A gzipped CPU pprof of about 10 KB (distinct stacks of distinct frames).
fn pprof_10k() -> Vec<u8> {
    let build = |stacks: u64| {
        let mut b = ProfileBuilder::cpu(97);
        for i in 0..stacks {
            let frames: Vec<String> = (0..8)
                .map(|d| format!("pkg{}::module{}::function_{}", i % 7, d, i * 31 + d))
                .collect();
            b.add_folded(&frames, &[(i as i64 + 1) * b.period()]);
        }
        encode_gzip(&b.build(), 1)
    };
    let mut stacks = 16;
    while build(stacks).len() < 10_000 {
        stacks += 4;
    }
    build(stacks)
}

fn push_body() -> Bytes {
    let labels = [
        ("__name__", "process_cpu"),
        ("service_name", "checkout"),
        ("namespace", "shop"),
        ("pod", "checkout-7d9f8b6c5-x2x7q"),
    ];
    PushRequest {
        series: vec![RawProfileSeries {
            labels: labels
                .iter()
                .map(|(n, v)| LabelPair {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: pprof_10k().into(),
                id: String::new(),
            }],
        }],
    }
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
    let config = Config {
        listen_address: "127.0.0.1".into(),
        listen_port: 0,
        ..Config::default()
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
    handle.shutdown();
    rt.block_on(server).unwrap().unwrap();
    assert!(count.0.load(Ordering::Relaxed) > 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
