//! Relabelling used the two ways a host uses it: on discovered targets (a `Discoverer`
//! wrapper) and on profile labels (a `Receiver` in the chain).

use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, StreamExt};
use prometheus_client::registry::Registry;
use pyro_core::{
    AppendError, Discoverer, DynReceiver, Labels, Profile, Receiver, Target, TargetStream,
    async_trait,
};
use pyro_discovery::relabel::{
    Action, RelabelConfig, RelabelDiscoverer, RelabelMetrics, RelabelReceiver, RelabelRules,
};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_iter(pairs.iter().copied())
}

/// Three updates, then the end.
#[derive(Debug)]
struct Updates(Vec<Vec<Target>>);

impl Discoverer for Updates {
    fn subscribe(&self) -> TargetStream {
        futures_util::stream::iter(self.0.clone()).boxed()
    }
}

fn rules() -> RelabelRules {
    let rules: Vec<RelabelConfig> = serde_json::from_str(
        r#"[
            {"source_labels": ["__meta_process_exe"], "regex": ".*/([^/]+)", "target_label": "service_name"},
            {"source_labels": ["service_name"], "regex": "sshd", "action": "drop"},
            {"action": "labeldrop", "regex": "__meta_process_cwd"}
        ]"#,
    )
    .unwrap();
    RelabelRules::new(&rules).unwrap()
}

#[test]
fn discoverer_relabels_every_update() {
    let t = |pid: &str, exe: &str| {
        Target::new(labels(&[
            ("__process_pid__", pid),
            ("__meta_process_exe", exe),
            ("__meta_process_cwd", "/"),
        ]))
    };
    let source = Updates(vec![
        vec![t("1", "/usr/sbin/sshd"), t("2", "/usr/bin/api")],
        vec![t("2", "/usr/bin/api"), t("3", "/usr/bin/db")],
        vec![],
    ]);
    let relabelled = RelabelDiscoverer::new(source, rules());
    let sets: Vec<Vec<Target>> = futures_executor::block_on(relabelled.subscribe().collect());
    assert_eq!(sets.len(), 3);
    assert_eq!(
        sets[0],
        vec![Target::new(labels(&[
            ("__process_pid__", "2"),
            ("__meta_process_exe", "/usr/bin/api"),
            ("service_name", "api"),
        ]))]
    );
    let names: Vec<_> = sets[1]
        .iter()
        .map(|t| t.service_name().into_owned())
        .collect();
    assert_eq!(names, ["api", "db"]);
    assert!(sets[2].is_empty());
}

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<Profile>>);

#[async_trait]
impl Receiver for Collect {
    async fn append(&self, p: Profile) -> Result<(), AppendError> {
        self.0.lock().unwrap().push(p);
        Ok(())
    }
}

#[test]
fn receiver_relabels_profile_labels_and_counts_drops() {
    let out = Arc::new(Collect::default());
    let mut registry = Registry::default();
    let rules = RelabelRules::new(&[
        RelabelConfig {
            source_labels: vec!["service_name".into()],
            regex: "(.*)-canary".into(),
            target_label: "service_name".into(),
            ..RelabelConfig::default()
        },
        RelabelConfig {
            source_labels: vec!["env".into()],
            regex: "dev".into(),
            action: Action::Drop,
            ..RelabelConfig::default()
        },
    ])
    .unwrap();
    let r = RelabelReceiver::new(rules, out.clone() as DynReceiver)
        .with_metrics(RelabelMetrics::register(&mut registry));
    let send = |pairs: &[(&str, &str)]| {
        r.append(Profile::new(labels(pairs), &b"payload"[..]))
            .now_or_never()
            .unwrap()
            .unwrap();
    };
    send(&[("__name__", "process_cpu"), ("service_name", "api-canary")]);
    send(&[
        ("__name__", "process_cpu"),
        ("service_name", "api"),
        ("env", "dev"),
    ]);
    let got = std::mem::take(&mut *out.0.lock().unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels.get("service_name"), Some("api"));
    assert_eq!(&got[0].raw[..], b"payload");
    assert_eq!((r.metrics().processed(), r.metrics().dropped()), (2, 1));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("pyroscope_relabel_profiles_dropped_total 1"),
        "{text}"
    );
}
