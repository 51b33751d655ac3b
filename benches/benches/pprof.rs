//! pprof codec and builder: what every profile passing through pyro costs.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pyro_core::pprof::{DEFAULT_MAX_DECODED_SIZE, ProfileBuilder, decode, encode, encode_gzip};

fn codec(c: &mut Criterion) {
    let profile = pyro_benches::cpu_profile(10 * 1024);
    let decoded = decode(&profile.raw, DEFAULT_MAX_DECODED_SIZE).unwrap();
    let plain = encode(&decoded);
    let mut g = c.benchmark_group("pprof_10KiB");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("decode_gzip", |b| {
        b.iter(|| decode(black_box(&profile.raw), DEFAULT_MAX_DECODED_SIZE).unwrap())
    });
    g.bench_function("decode_plain", |b| {
        b.iter(|| decode(black_box(&plain), DEFAULT_MAX_DECODED_SIZE).unwrap())
    });
    g.bench_function("encode_gzip_fast", |b| {
        b.iter(|| encode_gzip(black_box(&decoded), 1))
    });
    g.finish();
}

fn builder(c: &mut Criterion) {
    // 10 000 samples over 1 000 distinct 20-frame stacks, as one collection round of a busy host.
    let stacks: Vec<Vec<String>> = (0..1000)
        .map(|s| {
            (0..20)
                .map(|d| format!("fn_{}", (s * 31 + d * 7) % 500))
                .collect()
        })
        .collect();
    let mut g = c.benchmark_group("profile_builder");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("10k_samples_1k_stacks", |b| {
        b.iter(|| {
            let mut pb = ProfileBuilder::cpu(97);
            for i in 0..10_000 {
                pb.add_folded(&stacks[i % stacks.len()], &[10_309_278]);
            }
            pb.build()
        })
    });
    g.finish();
}

criterion_group!(benches, codec, builder);
criterion_main!(benches);
