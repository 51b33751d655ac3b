//! The enrichment rules of Alloy's `pyroscope.enrich` (see `alloy.md` §2), one test each, plus
//! target updates racing with appends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use prometheus_client::registry::Registry;
use pyro_core::{
    AppendError, Discoverer, DynReceiver, Labels, Profile, Receiver, StaticDiscoverer, Target,
    async_trait,
};
use pyro_enrich::{EnrichConfig, EnrichError, EnrichMetrics, Enricher};

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<Profile>>);

#[async_trait]
impl Receiver for Collect {
    async fn append(&self, p: Profile) -> Result<(), AppendError> {
        self.0.lock().unwrap().push(p);
        Ok(())
    }
}

impl Collect {
    fn take(&self) -> Vec<Profile> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_iter(pairs.iter().copied())
}

fn target(pairs: &[(&str, &str)]) -> Target {
    Target::new(labels(pairs))
}

fn config(target_match: &str, profiles_match: Option<&str>, copy: &[&str]) -> EnrichConfig {
    EnrichConfig {
        target_match_label: target_match.into(),
        profiles_match_label: profiles_match.map(Into::into),
        labels_to_copy: copy.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn enricher(config: EnrichConfig) -> (Enricher, Arc<Collect>) {
    let out = Arc::new(Collect::default());
    let e = Enricher::new(config, vec![out.clone() as DynReceiver]).unwrap();
    (e, out)
}

/// Sends one profile and returns what came out.
fn send(e: &Enricher, out: &Collect, pairs: &[(&str, &str)]) -> Labels {
    e.append(Profile::new(labels(pairs), &b"pprof"[..]))
        .now_or_never()
        .expect("no await point blocks")
        .unwrap();
    let mut got = out.take();
    assert_eq!(got.len(), 1);
    got.pop().unwrap().labels
}

fn pod_targets() -> Vec<Target> {
    vec![
        target(&[
            ("__meta_kubernetes_pod_ip", "10.0.0.1"),
            ("__meta_kubernetes_namespace", "shop"),
            ("namespace", "shop"),
            ("pod", "cart-1"),
            ("service_name", "cart"),
        ]),
        target(&[
            ("__meta_kubernetes_pod_ip", "10.0.0.2"),
            ("namespace", "auth"),
            ("pod", "login-1"),
        ]),
    ]
}

#[test]
fn copies_all_target_labels_when_labels_to_copy_is_empty() {
    let (e, out) = enricher(config("__meta_kubernetes_pod_ip", Some("ip"), &[]));
    e.set_targets(&pod_targets());
    let got = send(&e, &out, &[("__name__", "process_cpu"), ("ip", "10.0.0.1")]);
    assert_eq!(
        got,
        labels(&[
            ("__name__", "process_cpu"),
            ("ip", "10.0.0.1"),
            ("__meta_kubernetes_pod_ip", "10.0.0.1"),
            ("__meta_kubernetes_namespace", "shop"),
            ("namespace", "shop"),
            ("pod", "cart-1"),
            ("service_name", "cart"),
        ])
    );
}

#[test]
fn copies_only_the_listed_labels_and_ignores_absent_ones() {
    let (e, out) = enricher(config(
        "__meta_kubernetes_pod_ip",
        Some("ip"),
        &["namespace", "pod", "no_such_label"],
    ));
    e.set_targets(&pod_targets());
    let got = send(&e, &out, &[("__name__", "process_cpu"), ("ip", "10.0.0.2")]);
    assert_eq!(
        got,
        labels(&[
            ("__name__", "process_cpu"),
            ("ip", "10.0.0.2"),
            ("namespace", "auth"),
            ("pod", "login-1"),
        ])
    );
}

#[test]
fn target_labels_overwrite_profile_labels() {
    let (e, out) = enricher(config(
        "__meta_kubernetes_pod_ip",
        Some("ip"),
        &["service_name"],
    ));
    e.set_targets(&pod_targets());
    let got = send(
        &e,
        &out,
        &[
            ("__name__", "process_cpu"),
            ("ip", "10.0.0.1"),
            ("service_name", "from-sdk"),
        ],
    );
    assert_eq!(got.get("service_name"), Some("cart"));
}

#[test]
fn profiles_match_label_defaults_to_target_match_label() {
    let (e, out) = enricher(config("pod", None, &["namespace"]));
    assert_eq!(e.config().profiles_match_label(), "pod");
    e.set_targets(&pod_targets());
    let got = send(&e, &out, &[("__name__", "x"), ("pod", "login-1")]);
    assert_eq!(got.get("namespace"), Some("auth"));
    // Exact equality, no normalisation.
    let got = send(&e, &out, &[("__name__", "x"), ("pod", "Login-1")]);
    assert_eq!(got.get("namespace"), None);
}

#[test]
fn unmatched_and_unlabelled_profiles_pass_unchanged() {
    let mut registry = Registry::default();
    let (e, out) = enricher(config("__meta_kubernetes_pod_ip", Some("ip"), &[]));
    let e = e.with_metrics(EnrichMetrics::register(&mut registry));
    e.set_targets(&pod_targets());
    let no_label = [("__name__", "process_cpu"), ("service_name", "x")];
    assert_eq!(send(&e, &out, &no_label), labels(&no_label));
    let no_match = [("__name__", "process_cpu"), ("ip", "10.9.9.9")];
    assert_eq!(send(&e, &out, &no_match), labels(&no_match));
    // An empty match value is "no label" (Labels never stores one, but try_from_pairs can).
    let empty = Labels::try_from_pairs([("__name__", "x"), ("ip", "")]).unwrap();
    e.append(Profile::new(empty.clone(), &b""[..]))
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(out.take()[0].labels, empty);
    send(&e, &out, &[("ip", "10.0.0.1")]);

    assert_eq!(e.metrics().unmatched(), 3);
    assert_eq!(e.metrics().enriched(), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("pyroscope_enrich_profiles_enriched_total 1"),
        "{text}"
    );
    assert!(
        text.contains("pyroscope_enrich_profiles_unmatched_total 3"),
        "{text}"
    );
    assert!(text.contains("pyroscope_enrich_targets 2"), "{text}");
}

#[test]
fn targets_without_the_match_label_are_skipped_and_the_last_duplicate_wins() {
    let (e, out) = enricher(config("ip", None, &["owner"]));
    e.set_targets(&[
        target(&[("owner", "no-ip")]),
        target(&[("ip", "1.1.1.1"), ("owner", "first")]),
        target(&[("ip", "1.1.1.1"), ("owner", "second")]),
        target(&[("ip", "2.2.2.2")]),
    ]);
    assert_eq!(e.target_count(), 2);
    assert_eq!(
        send(&e, &out, &[("ip", "1.1.1.1")]).get("owner"),
        Some("second")
    );
    // A target that has the match value but none of the labels to copy still "matches".
    assert_eq!(
        send(&e, &out, &[("ip", "2.2.2.2")]),
        labels(&[("ip", "2.2.2.2")])
    );
    assert_eq!(e.metrics().enriched(), 2);
}

#[test]
fn ready_before_targets_and_updates_replace_the_set() {
    let (e, out) = enricher(config("ip", None, &["owner"]));
    assert_eq!(e.target_count(), 0);
    assert_eq!(
        send(&e, &out, &[("ip", "1.1.1.1")]),
        labels(&[("ip", "1.1.1.1")])
    );

    e.set_targets(&[target(&[("ip", "1.1.1.1"), ("owner", "a")])]);
    assert_eq!(send(&e, &out, &[("ip", "1.1.1.1")]).get("owner"), Some("a"));
    e.set_targets(&[target(&[("ip", "3.3.3.3"), ("owner", "c")])]);
    assert_eq!(send(&e, &out, &[("ip", "1.1.1.1")]).get("owner"), None);
    assert_eq!(send(&e, &out, &[("ip", "3.3.3.3")]).get("owner"), Some("c"));
}

#[test]
fn the_payload_is_forwarded_without_a_copy() {
    let (e, out) = enricher(config("ip", None, &[]));
    e.set_targets(&[target(&[("ip", "1.1.1.1"), ("owner", "a")])]);
    let raw = Bytes::from(vec![0x1f, 0x8b, 1, 2, 3]);
    let ptr = raw.as_ptr();
    let p = Profile::new(labels(&[("ip", "1.1.1.1")]), raw).with_id("id-1");
    e.append(p).now_or_never().unwrap().unwrap();
    let got = out.take().pop().unwrap();
    assert_eq!(got.raw.as_ptr(), ptr);
    assert_eq!(&got.raw[..], &[0x1f, 0x8b, 1, 2, 3]);
    assert_eq!(got.id.as_deref(), Some("id-1"));
    assert_eq!(got.labels.get("owner"), Some("a"));
}

#[test]
fn config_requires_target_match_label() {
    let err = Enricher::new(EnrichConfig::default(), vec![]).unwrap_err();
    assert_eq!(err, EnrichError::MissingTargetMatchLabel);
    assert_eq!(err.to_string(), "target_match_label is required");
    // Alloy's argument names, as plain data.
    let c: EnrichConfig =
        serde_json::from_str(r#"{"target_match_label": "ip", "labels_to_copy": ["a"]}"#).unwrap();
    assert_eq!(c, config("ip", None, &["a"]));
    assert!(serde_json::from_str::<EnrichConfig>(r#"{"target_match_labels": "ip"}"#).is_err());
}

#[derive(Debug)]
struct Fails;

#[async_trait]
impl Receiver for Fails {
    async fn append(&self, _: Profile) -> Result<(), AppendError> {
        Err(AppendError::unavailable("down"))
    }
}

#[test]
fn forward_errors_are_returned_and_all_receivers_get_the_profile() {
    let out = Arc::new(Collect::default());
    let e = Enricher::new(
        config("ip", None, &[]),
        vec![Arc::new(Fails) as DynReceiver, out.clone() as DynReceiver],
    )
    .unwrap();
    let err = e
        .append(Profile::new(labels(&[("ip", "1")]), &b""[..]))
        .now_or_never()
        .unwrap()
        .unwrap_err();
    assert!(err.kind().is_retryable(), "{err}");
    assert_eq!(out.take().len(), 1);
}

#[tokio::test]
async fn fed_from_a_discoverer() {
    let (e, out) = enricher(config("ip", None, &["owner"]));
    let source = StaticDiscoverer::new(vec![target(&[("ip", "1.1.1.1"), ("owner", "a")])]);
    e.run_updates(source.subscribe()).await;
    assert_eq!(e.target_count(), 1);
    assert_eq!(send(&e, &out, &[("ip", "1.1.1.1")]).get("owner"), Some("a"));
}

/// Counts what it receives and checks that every profile's labels come from one generation.
#[derive(Debug, Default)]
struct CheckGeneration {
    seen: std::sync::atomic::AtomicU64,
    generations: Mutex<std::collections::BTreeSet<String>>,
}

#[async_trait]
impl Receiver for CheckGeneration {
    async fn append(&self, p: Profile) -> Result<(), AppendError> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        let generation = p.labels.get("generation").expect("every profile matches");
        // Both copied labels must come from the same index generation: never a mix.
        assert_eq!(
            p.labels.get("generation_copy"),
            Some(generation),
            "{}",
            p.labels
        );
        let ip = p.labels.get("ip").unwrap();
        assert_eq!(
            p.labels.get("owner"),
            Some(format!("{ip}@{generation}").as_str())
        );
        self.generations
            .lock()
            .unwrap()
            .insert(generation.to_owned());
        Ok(())
    }
}

fn generation(g: usize, n: usize) -> Vec<Target> {
    (0..n)
        .map(|i| {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            let owner = format!("{ip}@{g}");
            let g = g.to_string();
            target(&[
                ("ip", ip.as_str()),
                ("owner", owner.as_str()),
                ("generation", g.as_str()),
                ("generation_copy", g.as_str()),
            ])
        })
        .collect()
}

/// Target updates replace the index while four tasks append as fast as they can: every profile
/// sees one complete generation, appends never fail, and the last update is what later
/// profiles see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_under_load() {
    const TARGETS: usize = 2_000;
    const UPDATES: usize = 50;
    let check = Arc::new(CheckGeneration::default());
    let e = Arc::new(
        Enricher::new(config("ip", None, &[]), vec![check.clone() as DynReceiver]).unwrap(),
    );
    e.set_targets(&generation(0, TARGETS));
    let generations: Vec<_> = (1..=UPDATES).map(|g| generation(g, TARGETS)).collect();

    let done = Arc::new(AtomicBool::new(false));
    let mut appenders = Vec::new();
    for task in 0..4 {
        let e = Arc::clone(&e);
        let done = Arc::clone(&done);
        appenders.push(tokio::spawn(async move {
            let mut i = task;
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) || sent < 1_000 {
                let ip = format!("10.0.{}.{}", (i % TARGETS) / 256, (i % TARGETS) % 256);
                let p = Profile::new(
                    labels(&[("__name__", "process_cpu"), ("ip", &ip)]),
                    &b""[..],
                );
                e.append(p).await.unwrap();
                sent += 1;
                i += 7;
                if sent.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            sent
        }));
    }
    let updater = {
        let e = Arc::clone(&e);
        tokio::task::spawn_blocking(move || {
            for g in &generations {
                e.set_targets(g);
            }
        })
    };
    updater.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for a in appenders {
        sent += a.await.unwrap();
    }
    assert_eq!(check.seen.load(Ordering::Relaxed), sent);
    assert_eq!(e.metrics().enriched(), sent);
    assert_eq!(e.metrics().unmatched(), 0);

    // After the last update, profiles see the last generation.
    let mut l = labels(&[("ip", "10.0.0.1")]);
    assert!(e.enrich(&mut l));
    assert_eq!(l.get("generation"), Some(UPDATES.to_string().as_str()));
    assert!(!check.generations.lock().unwrap().is_empty());
}
