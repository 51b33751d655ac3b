//! Enrichment (`pyroscope.enrich`): profiles looked up among 10 000 targets, labels only (the
//! pprof payload is a shared `Bytes` and never copied).
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use pyro_benches::cpu_time;
use pyro_core::{AppendError, DynReceiver, Labels, Profile, Receiver, Target, async_trait};
use pyro_enrich::{EnrichConfig, Enricher};

#[derive(Debug)]
struct Discard;

#[async_trait]
impl Receiver for Discard {
    async fn append(&self, p: Profile) -> Result<(), AppendError> {
        black_box(p);
        Ok(())
    }
}

const TARGETS: usize = 10_000;

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
}

fn targets() -> Vec<Target> {
    (0..TARGETS)
        .map(|i| {
            Target::new(Labels::from_iter([
                ("__meta_kubernetes_pod_ip", ip(i)),
                ("__meta_kubernetes_namespace", format!("ns-{}", i % 20)),
                ("__meta_kubernetes_pod_name", format!("pod-{i}")),
                ("namespace", format!("ns-{}", i % 20)),
                ("pod", format!("pod-{i}")),
                ("service_name", format!("svc-{}", i % 300)),
            ]))
        })
        .collect()
}

fn profiles(n: usize, matching: bool) -> Vec<Profile> {
    let raw = pyro_benches::cpu_profile(10 * 1024).raw;
    (0..n)
        .map(|i| {
            let value = if matching {
                ip((i * 7) % TARGETS)
            } else {
                format!("192.168.0.{i}")
            };
            Profile::new(
                Labels::from_iter([
                    ("__name__", "process_cpu".to_owned()),
                    ("__delta__", "false".to_owned()),
                    ("pod_ip", value),
                    ("service_name", "from-sdk".to_owned()),
                    ("span_name", "GET /api".to_owned()),
                ]),
                raw.clone(),
            )
        })
        .collect()
}

fn enricher(copy: &[&str]) -> Enricher {
    let e = Enricher::new(
        EnrichConfig {
            target_match_label: "__meta_kubernetes_pod_ip".into(),
            profiles_match_label: Some("pod_ip".into()),
            labels_to_copy: copy.iter().map(|s| (*s).to_owned()).collect(),
        },
        vec![Arc::new(Discard) as DynReceiver],
    )
    .unwrap();
    e.set_targets(&targets());
    e
}

/// The same labels in a set of their own (a profile that arrived over HTTP owns its labels).
fn owned(p: &Profile) -> Profile {
    let labels = Labels::try_from_pairs(
        p.labels
            .iter()
            .map(|l| (l.name().to_owned(), l.value().to_owned())),
    )
    .unwrap();
    Profile::new(labels, p.raw.clone())
}

fn enrich(c: &mut Criterion<cpu_time::ThreadCpuTime>) {
    const BATCH: usize = 10_000;
    let mut g = c.benchmark_group("enrich_10k_targets_cpu");
    g.throughput(Throughput::Elements(BATCH as u64));
    let cases = [
        (
            "copy_3_labels",
            &["namespace", "pod", "service_name"][..],
            true,
        ),
        ("copy_all_6_labels", &[][..], true),
        ("unmatched", &["namespace"][..], false),
    ];
    for (name, copy, matching) in cases {
        let e = enricher(copy);
        let batch = profiles(BATCH, matching);
        // Profiles whose labels are shared with another holder: enrichment copies the set.
        g.bench_function(format!("{name}/shared_labels"), |b| {
            b.iter(|| {
                for p in &batch {
                    e.append(p.clone()).now_or_never().unwrap().unwrap();
                }
            })
        });
        // Profiles that own their labels, as they arrive from a decoder.
        g.bench_function(format!("{name}/owned_labels"), |b| {
            b.iter_batched(
                || batch.iter().map(owned).collect::<Vec<_>>(),
                |profiles| {
                    for p in profiles {
                        e.append(p).now_or_never().unwrap().unwrap();
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    // Rebuilding the index from 10 000 targets (what each discovery update costs).
    let e = enricher(&["namespace", "pod", "service_name"]);
    let t = targets();
    let mut g = c.benchmark_group("enrich_index_cpu");
    g.throughput(Throughput::Elements(TARGETS as u64));
    g.bench_function("set_targets_10k", |b| {
        b.iter(|| e.set_targets(black_box(&t)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(cpu_time::ThreadCpuTime);
    targets = enrich
}
criterion_main!(benches);
