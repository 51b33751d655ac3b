//! Relabelling: 10 000 discovered processes through five rules of the kinds hosts write
//! (`discovery.relabel` after `discovery.process`).
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pyro_benches::cpu_time;
use pyro_core::{Labels, Target};
use pyro_discovery::relabel::{Action, RelabelConfig, RelabelRules, relabel_targets};

fn targets(n: usize) -> Vec<Target> {
    let exes = [
        "/usr/bin/python3.12",
        "/usr/sbin/nginx",
        "/usr/local/bin/api",
        "/usr/sbin/sshd",
    ];
    (0..n)
        .map(|i| {
            let exe = exes[i % exes.len()];
            Target::new(Labels::from_iter([
                ("__process_pid__", (1000 + i).to_string()),
                ("__meta_process_exe", exe.to_owned()),
                ("__meta_process_cwd", format!("/srv/app{}", i % 50)),
                (
                    "__meta_process_commandline",
                    format!("{exe} --port {}", 8000 + i % 100),
                ),
                ("__container_id__", format!("{:064x}", i * 7919)),
            ]))
        })
        .collect()
}

fn rules() -> RelabelRules {
    RelabelRules::new(&[
        // service_name from the executable's base name.
        RelabelConfig {
            source_labels: vec!["__meta_process_exe".into()],
            regex: ".*/([^/]+?)(?:[0-9.]+)?".into(),
            target_label: "service_name".into(),
            ..RelabelConfig::default()
        },
        // Drop what should not be profiled.
        RelabelConfig {
            source_labels: vec!["service_name".into()],
            regex: "sshd|cron|systemd.*".into(),
            action: Action::Drop,
            ..RelabelConfig::default()
        },
        // Shard targets across 4 collectors, keep this one's share.
        RelabelConfig {
            source_labels: vec!["__container_id__".into()],
            modulus: 4,
            target_label: "__tmp_shard".into(),
            action: Action::HashMod,
            ..RelabelConfig::default()
        },
        RelabelConfig {
            source_labels: vec!["__tmp_shard".into()],
            regex: "[0-2]".into(),
            action: Action::Keep,
            ..RelabelConfig::default()
        },
        // Metadata that must not become a label.
        RelabelConfig {
            regex: "__meta_process_(cwd|commandline)".into(),
            action: Action::LabelDrop,
            ..RelabelConfig::default()
        },
    ])
    .unwrap()
}

fn relabel(c: &mut Criterion<cpu_time::ThreadCpuTime>) {
    let targets = targets(10_000);
    let rules = rules();
    let kept = relabel_targets(&rules, targets.clone()).len();
    assert!(kept > 5_000 && kept < 7_500, "{kept}");
    let mut g = c.benchmark_group("relabel");
    g.throughput(Throughput::Elements(targets.len() as u64));
    g.bench_function("10k_targets_5_rules_cpu", |b| {
        b.iter(|| relabel_targets(black_box(&rules), black_box(targets.clone())))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(cpu_time::ThreadCpuTime);
    targets = relabel
}
criterion_main!(benches);
