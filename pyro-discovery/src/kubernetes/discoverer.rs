//! [`KubernetesDiscoverer`]: list + watch of the role's objects, one full target set per update.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use pyro_core::{Discoverer, Target, TargetStream};

use super::config::{KubernetesConfig, Role};
use super::labels::{Related, endpointslice_targets, node_targets, pod_targets, service_targets};

/// Where the service account's namespace is mounted in a pod.
const OWN_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// A failing cause is logged again after this long.
const RELOG_INTERVAL: Duration = Duration::from_secs(600);
/// The first retry after the client could not be built; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Errors of `discovery.kubernetes`.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// A field is missing or set to a value that cannot take effect.
    #[error("discovery.kubernetes: `{field}` {reason}")]
    InvalidField {
        /// The field, as Alloy names it.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A file the config names could not be read.
    #[error("discovery.kubernetes: reading `{field}` from {}: {source}", path.display())]
    ReadFile {
        /// The field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The client could not be configured (kubeconfig, in-cluster environment, TLS files).
    #[error("discovery.kubernetes: configuring the client: {0}")]
    Client(String),
}

/// Counters of a [`KubernetesDiscoverer`].
#[derive(Debug, Clone, Default)]
pub struct KubernetesMetrics {
    events: Counter,
    failures: Counter,
    targets: Gauge,
}

impl KubernetesMetrics {
    /// Creates the metrics and registers them as `pyroscope_discovery_kubernetes_events_total`,
    /// `pyroscope_discovery_kubernetes_failures_total` and
    /// `pyroscope_discovery_kubernetes_targets`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pyroscope_discovery_kubernetes_events",
            "List and watch events received",
            m.events.clone(),
        );
        registry.register(
            "pyroscope_discovery_kubernetes_failures",
            "Failed lists, watches and client setups (retried with a backoff)",
            m.failures.clone(),
        );
        registry.register(
            "pyroscope_discovery_kubernetes_targets",
            "Targets in the current set",
            m.targets.clone(),
        );
        m
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.events.get()
    }

    /// Failures so far.
    pub fn failures(&self) -> u64 {
        self.failures.get()
    }
}

#[derive(Debug)]
struct Inner {
    config: KubernetesConfig,
    role: Role,
    /// Empty: all namespaces.
    namespaces: Vec<String>,
    selectors: HashMap<Role, (String, String)>,
}

/// `discovery.kubernetes`: a [`Discoverer`] whose stream lists and watches the role's objects
/// (resuming from the last `resourceVersion`, listing again after `410 Gone`, backing off on
/// errors) and yields the complete target set after every change, once every watched
/// collection has been listed.
#[derive(Debug, Clone)]
pub struct KubernetesDiscoverer {
    inner: Arc<Inner>,
    metrics: KubernetesMetrics,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> KubernetesError {
    KubernetesError::InvalidField {
        field,
        reason: reason.into(),
    }
}

impl KubernetesDiscoverer {
    /// Checks `config`; nothing is contacted until the stream is polled.
    pub fn new(config: KubernetesConfig) -> Result<Self, KubernetesError> {
        let role = config.role.ok_or_else(|| invalid("role", "is required"))?;
        if config.api_server.is_some() && config.kubeconfig_file.is_some() {
            return Err(invalid(
                "kubeconfig_file",
                "and `api_server` are both set: the kubeconfig names its server",
            ));
        }
        if config.api_server.is_none()
            && (config.bearer_token.is_some()
                || config.bearer_token_file.is_some()
                || config.tls_config.is_some())
        {
            return Err(invalid(
                "api_server",
                "is required with bearer_token, bearer_token_file or tls_config (a kubeconfig \
                 or the service account carries its own credentials)",
            ));
        }
        if config.bearer_token.is_some() && config.bearer_token_file.is_some() {
            return Err(invalid(
                "bearer_token_file",
                "and `bearer_token` are both set",
            ));
        }
        if let Some(s) = &config.api_server {
            s.parse::<http::Uri>()
                .map_err(|e| invalid("api_server", format!("{s:?} is not a URL: {e}")))?;
        }
        if config.attach_metadata.node && !matches!(role, Role::Pod | Role::EndpointSlice) {
            return Err(invalid(
                "attach_metadata.node",
                format!(
                    "has no effect with role \"{}\" (only pod and endpointslice)",
                    role.as_str()
                ),
            ));
        }
        let mut selectors = HashMap::new();
        for s in &config.selectors {
            // As Prometheus: an endpointslice discoverer also watches pods and services.
            let allowed = s.role == role
                || (s.role == Role::Node && config.attach_metadata.node)
                || (role == Role::EndpointSlice && matches!(s.role, Role::Pod | Role::Service));
            if !allowed {
                return Err(invalid(
                    "selectors.role",
                    format!(
                        "\"{}\" has no effect with role \"{}\"",
                        s.role.as_str(),
                        role.as_str()
                    ),
                ));
            }
            if selectors
                .insert(s.role, (s.label.clone(), s.field.clone()))
                .is_some()
            {
                return Err(invalid(
                    "selectors.role",
                    format!("\"{}\" is given twice", s.role.as_str()),
                ));
            }
        }
        let mut namespaces = config.namespaces.names.clone();
        if config.namespaces.own_namespace {
            let own = std::fs::read_to_string(OWN_NAMESPACE_FILE).map_err(|source| {
                KubernetesError::ReadFile {
                    field: "namespaces.own_namespace",
                    path: OWN_NAMESPACE_FILE.into(),
                    source,
                }
            })?;
            namespaces.push(own.trim().to_owned());
        }
        namespaces.sort();
        namespaces.dedup();
        if role == Role::Node && !namespaces.is_empty() {
            return Err(invalid(
                "namespaces",
                "has no effect on nodes, which have none",
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                role,
                namespaces,
                selectors,
            }),
            metrics: KubernetesMetrics::default(),
        })
    }

    /// Counts into `metrics` (from [`KubernetesMetrics::register`]).
    #[must_use]
    pub fn with_metrics(mut self, metrics: KubernetesMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this discoverer counts into.
    pub fn metrics(&self) -> &KubernetesMetrics {
        &self.metrics
    }
}

async fn client(c: &KubernetesConfig) -> Result<Client, KubernetesError> {
    let err = |e: &dyn std::fmt::Display| KubernetesError::Client(e.to_string());
    let config = if let Some(url) = &c.api_server {
        let mut config = kube::Config::new(url.parse().map_err(|e| err(&e))?);
        if let Some(t) = &c.bearer_token {
            config.auth_info.token = Some(t.expose().to_owned().into());
        }
        if let Some(p) = &c.bearer_token_file {
            config.auth_info.token_file = Some(p.to_string_lossy().into_owned());
        }
        if let Some(tls) = &c.tls_config {
            config.root_cert_file.clone_from(&tls.ca_file);
            config.auth_info.client_certificate = tls
                .cert_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned());
            config.auth_info.client_key = tls
                .key_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned());
            config.tls_server_name.clone_from(&tls.server_name);
            config.accept_invalid_certs = tls.insecure_skip_verify;
        }
        config
    } else if let Some(path) = &c.kubeconfig_file {
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(&e))?
    } else {
        kube::Config::incluster().map_err(|e| err(&e))?
    };
    Client::try_from(config).map_err(|e| err(&e))
}

/// A watched object of any kind.
#[derive(Debug, Clone)]
enum Obj {
    Pod(Box<Pod>),
    Node(Box<Node>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
}

/// One watched collection: its last complete listing plus later changes.
struct Collection {
    kind: Role,
    synced: bool,
    buffer: Option<BTreeMap<String, Obj>>,
    /// By `namespace/name`, so the set comes out in one order without sorting.
    objects: BTreeMap<String, Obj>,
    /// Each object's targets, computed once per change of the object (or of a related
    /// collection), so a watch event costs one object's labels, not every object's.
    cache: HashMap<String, Vec<Target>>,
}

type Updates = SelectAll<BoxStream<'static, (usize, Result<Event<Obj>, watcher::Error>)>>;

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    index: usize,
    wrap: fn(K) -> Obj,
) -> BoxStream<'static, (usize, Result<Event<Obj>, watcher::Error>)>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |r| (index, r.map(|e| map_event(e, wrap))))
        .boxed()
}

fn map_event<K>(e: Event<K>, wrap: fn(K) -> Obj) -> Event<Obj> {
    match e {
        Event::Apply(k) => Event::Apply(wrap(k)),
        Event::Delete(k) => Event::Delete(wrap(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(wrap(k)),
        Event::InitDone => Event::InitDone,
    }
}

struct StreamState {
    inner: Arc<Inner>,
    metrics: KubernetesMetrics,
    updates: Option<Updates>,
    collections: Vec<Collection>,
    last: Option<Vec<Target>>,
    retry: Duration,
    last_error: Option<(String, Instant)>,
}

impl StreamState {
    fn fail(&mut self, cause: String) {
        self.metrics.failures.inc();
        let repeat = self
            .last_error
            .as_ref()
            .is_some_and(|(c, at)| *c == cause && at.elapsed() < RELOG_INTERVAL);
        if repeat {
            tracing::debug!(error = %cause, "Kubernetes discovery failed again; keeping the last targets.");
        } else {
            tracing::warn!(error = %cause, "Kubernetes discovery failed; keeping the last targets and retrying.");
            self.last_error = Some((cause, Instant::now()));
        }
    }

    fn start(&mut self, client: &Client) {
        let role = self.inner.role;
        let selector = |r: Role| {
            let mut c = watcher::Config::default();
            if let Some((label, field)) = self.inner.selectors.get(&r) {
                if !label.is_empty() {
                    c = c.labels(label);
                }
                if !field.is_empty() {
                    c = c.fields(field);
                }
            }
            c
        };
        let mut updates = SelectAll::new();
        let mut collections = Vec::new();
        let namespaces: Vec<Option<&str>> = if self.inner.namespaces.is_empty() {
            vec![None]
        } else {
            self.inner
                .namespaces
                .iter()
                .map(|n| Some(n.as_str()))
                .collect()
        };
        let mut push = |kind: Role, s: BoxStream<'static, _>| {
            updates.push(s);
            collections.push(Collection {
                kind,
                synced: false,
                buffer: None,
                objects: BTreeMap::new(),
                cache: HashMap::new(),
            });
        };
        let mut index = 0;
        match role {
            Role::Pod => {
                for ns in &namespaces {
                    let api: Api<Pod> = match ns {
                        Some(ns) => Api::namespaced(client.clone(), ns),
                        None => Api::all(client.clone()),
                    };
                    push(
                        Role::Pod,
                        watch(api, selector(Role::Pod), index, |p| Obj::Pod(Box::new(p))),
                    );
                    index += 1;
                }
                if self.inner.config.attach_metadata.node {
                    let api: Api<Node> = Api::all(client.clone());
                    push(
                        Role::Node,
                        watch(api, selector(Role::Node), index, |n| Obj::Node(Box::new(n))),
                    );
                }
            }
            Role::Node => {
                let api: Api<Node> = Api::all(client.clone());
                push(
                    Role::Node,
                    watch(api, selector(Role::Node), index, |n| Obj::Node(Box::new(n))),
                );
            }
            Role::Service => {
                for ns in &namespaces {
                    let api: Api<Service> = match ns {
                        Some(ns) => Api::namespaced(client.clone(), ns),
                        None => Api::all(client.clone()),
                    };
                    push(
                        Role::Service,
                        watch(api, selector(Role::Service), index, |s| {
                            Obj::Service(Box::new(s))
                        }),
                    );
                    index += 1;
                }
            }
            Role::EndpointSlice => {
                for ns in &namespaces {
                    let api = |c: &Client| -> (Api<EndpointSlice>, Api<Pod>, Api<Service>) {
                        match ns {
                            Some(ns) => (
                                Api::namespaced(c.clone(), ns),
                                Api::namespaced(c.clone(), ns),
                                Api::namespaced(c.clone(), ns),
                            ),
                            None => (
                                Api::all(c.clone()),
                                Api::all(c.clone()),
                                Api::all(c.clone()),
                            ),
                        }
                    };
                    let (eps, pods, services) = api(client);
                    push(
                        Role::EndpointSlice,
                        watch(eps, selector(Role::EndpointSlice), index, |e| {
                            Obj::EndpointSlice(Box::new(e))
                        }),
                    );
                    push(
                        Role::Pod,
                        watch(pods, selector(Role::Pod), index + 1, |p| {
                            Obj::Pod(Box::new(p))
                        }),
                    );
                    push(
                        Role::Service,
                        watch(services, selector(Role::Service), index + 2, |s| {
                            Obj::Service(Box::new(s))
                        }),
                    );
                    index += 3;
                }
                if self.inner.config.attach_metadata.node {
                    let api: Api<Node> = Api::all(client.clone());
                    push(
                        Role::Node,
                        watch(api, selector(Role::Node), index, |n| Obj::Node(Box::new(n))),
                    );
                }
            }
        }
        self.updates = Some(updates);
        self.collections = collections;
    }

    fn apply(&mut self, index: usize, event: Event<Obj>) {
        self.metrics.events.inc();
        let role = self.inner.role;
        let Some(c) = self.collections.get_mut(index) else {
            return;
        };
        let related_changed = c.kind != role && !matches!(event, Event::Init | Event::InitApply(_));
        let meta_key = |o: &Obj| match o {
            Obj::Pod(p) => key(&p.metadata),
            Obj::Node(n) => key(&n.metadata),
            Obj::Service(s) => key(&s.metadata),
            Obj::EndpointSlice(e) => key(&e.metadata),
        };
        // Managed fields are never used for labels and are most of an object's size.
        let slim = |mut o: Obj| {
            match &mut o {
                Obj::Pod(p) => p.metadata.managed_fields = None,
                Obj::Node(n) => n.metadata.managed_fields = None,
                Obj::Service(s) => s.metadata.managed_fields = None,
                Obj::EndpointSlice(e) => e.metadata.managed_fields = None,
            }
            o
        };
        match event {
            Event::Init => c.buffer = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                let o = slim(o);
                c.buffer
                    .get_or_insert_with(BTreeMap::new)
                    .insert(meta_key(&o), o);
            }
            Event::InitDone => {
                c.objects = c.buffer.take().unwrap_or_default();
                c.cache.clear();
                c.synced = true;
            }
            Event::Apply(o) => {
                let o = slim(o);
                let k = meta_key(&o);
                c.cache.remove(&k);
                c.objects.insert(k, o);
            }
            Event::Delete(o) => {
                let k = meta_key(&o);
                c.cache.remove(&k);
                c.objects.remove(&k);
            }
        }
        // Targets built with a related object (a pod's node, a slice's pods and service) are
        // stale when that object changes: build them again.
        if related_changed {
            for c in self.collections.iter_mut().filter(|c| c.kind == role) {
                c.cache.clear();
            }
        }
    }

    /// The objects of every collection of `kind`, by `namespace/name`.
    fn objects(&self, kind: Role) -> impl Iterator<Item = (&String, &Obj)> {
        self.collections
            .iter()
            .filter(move |c| c.kind == kind)
            .flat_map(|c| c.objects.iter())
    }

    fn targets(&mut self) -> Vec<Target> {
        let mut fresh: Vec<(usize, String, Vec<Target>)> = Vec::new();
        {
            let nodes: HashMap<&str, &Node> = self
                .collections
                .iter()
                .filter(|c| c.kind == Role::Node)
                .flat_map(|c| c.objects.values())
                .filter_map(|o| match o {
                    Obj::Node(n) => Some((n.metadata.name.as_deref().unwrap_or_default(), &**n)),
                    _ => None,
                })
                .collect();
            let attach = self.inner.config.attach_metadata.node;
            // Only the endpointslice role looks up related objects.
            let related = if self.inner.role == Role::EndpointSlice {
                Related {
                    pods: self
                        .objects(Role::Pod)
                        .filter_map(|(k, o)| match o {
                            Obj::Pod(p) => Some((k.clone(), &**p)),
                            _ => None,
                        })
                        .collect(),
                    services: self
                        .objects(Role::Service)
                        .filter_map(|(k, o)| match o {
                            Obj::Service(s) => Some((k.clone(), &**s)),
                            _ => None,
                        })
                        .collect(),
                    nodes: attach.then(|| nodes.clone()),
                }
            } else {
                Related::default()
            };
            for (ci, c) in self.collections.iter().enumerate() {
                if c.kind != self.inner.role {
                    continue;
                }
                for (k, o) in &c.objects {
                    if c.cache.contains_key(k) {
                        continue;
                    }
                    let mut out = Vec::new();
                    match o {
                        Obj::Pod(p) => {
                            let node = p
                                .spec
                                .as_ref()
                                .and_then(|s| s.node_name.as_deref())
                                .and_then(|n| nodes.get(n).copied());
                            // As Prometheus: with node metadata, a pod whose node is unknown waits.
                            if !(attach && node.is_none()) {
                                out.extend(pod_targets(p, node));
                            }
                        }
                        Obj::Node(n) => out.extend(node_targets(n)),
                        Obj::Service(s) => out.extend(service_targets(s)),
                        Obj::EndpointSlice(e) => out.extend(endpointslice_targets(e, &related)),
                    }
                    fresh.push((ci, k.clone(), out));
                }
            }
        }
        for (ci, k, targets) in fresh {
            self.collections[ci].cache.insert(k, targets);
        }
        let role = self.inner.role;
        let mut out = Vec::new();
        for c in self.collections.iter().filter(|c| c.kind == role) {
            for k in c.objects.keys() {
                if let Some(t) = c.cache.get(k) {
                    out.extend(t.iter().cloned());
                }
            }
        }
        out
    }

    async fn next(mut self) -> Option<(Vec<Target>, Self)> {
        loop {
            if self.updates.is_none() {
                match client(&self.inner.config).await {
                    Ok(c) => {
                        self.retry = FIRST_RETRY;
                        self.start(&c);
                    }
                    Err(e) => {
                        self.fail(e.to_string());
                        let wait = self.retry;
                        self.retry = (self.retry * 2).min(MAX_RETRY);
                        if self.last.is_none() {
                            self.last = Some(Vec::new());
                            return Some((Vec::new(), self));
                        }
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            let updates = self.updates.as_mut()?;
            let (index, event) = updates.next().await?;
            let mut changed = self.handle(index, event);
            // Take every update that is already here, so one burst makes one set.
            while let Some(Some((index, event))) =
                self.updates.as_mut().and_then(|u| u.next().now_or_never())
            {
                changed |= self.handle(index, event);
            }
            if self.last.is_none() && self.last_error.is_some() {
                // Failing before anything was listed: say so, so consumers are not left
                // waiting; the real set follows once the lists succeed.
                self.last = Some(Vec::new());
                return Some((Vec::new(), self));
            }
            if !changed || !self.collections.iter().all(|c| c.synced) {
                continue;
            }
            let set = self.targets();
            if self.last.as_ref() == Some(&set) {
                continue;
            }
            self.metrics.targets.set(set.len() as i64);
            self.last = Some(set.clone());
            return Some((set, self));
        }
    }

    /// Applies one update; whether the target set may have changed.
    fn handle(&mut self, index: usize, event: Result<Event<Obj>, watcher::Error>) -> bool {
        match event {
            Ok(e) => {
                let changes = !matches!(e, Event::Init | Event::InitApply(_));
                self.apply(index, e);
                if changes && self.last_error.take().is_some() {
                    tracing::info!("Kubernetes discovery recovered.");
                }
                changes
            }
            Err(e) => {
                self.fail(e.to_string());
                false
            }
        }
    }
}

impl Discoverer for KubernetesDiscoverer {
    fn subscribe(&self) -> TargetStream {
        let state = StreamState {
            inner: Arc::clone(&self.inner),
            metrics: self.metrics.clone(),
            updates: None,
            collections: Vec::new(),
            last: None,
            retry: FIRST_RETRY,
            last_error: None,
        };
        futures_util::stream::unfold(state, StreamState::next).boxed()
    }
}
