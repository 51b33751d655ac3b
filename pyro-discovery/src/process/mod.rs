//! `discovery.process`: targets for the processes running on this host, from `/proc`.
//!
//! Each process becomes one [`Target`] with `__process_pid__` and, as configured in
//! [`DiscoverConfig`], `__meta_process_exe`, `__meta_process_cwd`,
//! `__meta_process_commandline`, `__meta_process_username`, `__meta_process_uid`,
//! `__meta_process_cgroup_path` and `__container_id__` (empty values are left out), exactly as
//! Alloy's `discovery.process` builds them:
//!
//! - a process is skipped when its `exe`, `cwd`, `cmdline` or `cgroup` cannot be read (and the
//!   field is enabled); a process that vanished (`ENOENT`, `ESRCH`) is skipped silently, other
//!   failures (`EACCES` when not root) are logged at `debug` level. Kernel threads have no
//!   `exe`, so they are skipped while `exe` is enabled (the default) and listed otherwise;
//! - the exe is the text of the `/proc/<pid>/exe` link unchanged (gopsutil's `Exe`, a plain
//!   `readlink`): for a process whose binary was deleted or replaced after it started, the
//!   kernel appends ` (deleted)`, and `__meta_process_exe` is `<path> (deleted)`, as in Alloy.
//!   A relabel rule naming the service after the binary strips it with
//!   `regex = ".*/(.*?)(?: \\(deleted\\))?"` (valid in Alloy too);
//! - a failed user or uid lookup does not skip the process;
//! - the command line is the NUL-separated arguments joined by single spaces, empty arguments
//!   dropped (gopsutil's `Cmdline`);
//! - the uid is the real uid (first field of `Uid:` in `/proc/<pid>/status`); the user name
//!   comes from `/etc/passwd`, as Go's `os/user` does without cgo;
//! - the container id is [`container_id_from_cgroup`] of `/proc/<pid>/cgroup`; the cgroup path
//!   is [`cgroup_path`] of the same file.
//!
//! [`join`] then merges `join` targets (from Kubernetes or Docker discovery, say) into the
//! processes by container id.
//!
//! Files are read with `std::fs` rather than the `procfs` crate: discovery needs five small
//! reads per process with Alloy's exact error handling (which error means "vanished"), and plain
//! reads keep the `io::Error` for that, allow a different `/proc` mount
//! ([`ProcessDiscoveryConfig::proc_path`], for a host `/proc` inside a container) and let the
//! tests run against a fake `/proc` tree.

mod cgroup;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{Either, select};
use futures_util::{FutureExt, StreamExt};
use pyro_core::labels::names;
use pyro_core::{Discoverer, Labels, Target, TargetStream};
use serde::{Deserialize, Serialize};

pub use cgroup::cgroup_path;
pub use pyro_core::cgroup::container_id_from_cgroup;

/// `__meta_process_exe`: the executable (`readlink /proc/<pid>/exe`, with the kernel's
/// ` (deleted)` suffix when the binary was removed or replaced since the process started).
pub const LABEL_EXE: &str = "__meta_process_exe";
/// `__meta_process_cwd`: the working directory.
pub const LABEL_CWD: &str = "__meta_process_cwd";
/// `__meta_process_commandline`: the arguments joined by spaces.
pub const LABEL_COMMANDLINE: &str = "__meta_process_commandline";
/// `__meta_process_username`: the name of the real user.
pub const LABEL_USERNAME: &str = "__meta_process_username";
/// `__meta_process_uid`: the real uid.
pub const LABEL_UID: &str = "__meta_process_uid";
/// `__meta_process_cgroup_path`: the lines of `/proc/<pid>/cgroup` joined with `|`.
pub const LABEL_CGROUP_PATH: &str = "__meta_process_cgroup_path";

/// Which fields to read for each process: Alloy's `discover_config` block, with the defaults of
/// Alloy's code (its documentation says `username` and `uid` default to true; the code says
/// false).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverConfig {
    /// `__meta_process_exe` (default true).
    pub exe: bool,
    /// `__meta_process_cwd` (default true).
    pub cwd: bool,
    /// `__meta_process_commandline` (default true).
    pub commandline: bool,
    /// `__container_id__` (default true).
    pub container_id: bool,
    /// `__meta_process_cgroup_path` (default false).
    pub cgroup_path: bool,
    /// `__meta_process_username` (default false).
    pub username: bool,
    /// `__meta_process_uid` (default false).
    pub uid: bool,
}

impl Default for DiscoverConfig {
    fn default() -> Self {
        Self {
            exe: true,
            cwd: true,
            commandline: true,
            container_id: true,
            cgroup_path: false,
            username: false,
            uid: false,
        }
    }
}

/// The default `refresh_interval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// The shortest `refresh_interval` used; shorter values (zero included) are raised to it.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Arguments of process discovery (Alloy's `discovery.process`). Deserializes from Alloy's
/// names (`join` as a list of label maps, `refresh_interval` as `"60s"`); unknown fields are
/// refused by name.
///
/// ```
/// let c: pyro_discovery::process::ProcessDiscoveryConfig = serde_json::from_str(
///     r#"{"refresh_interval": "10s", "join": [{"__container_id__": "abc", "app": "x"}],
///         "discover_config": {"cwd": false}}"#,
/// ).unwrap();
/// assert_eq!(c.refresh_interval, std::time::Duration::from_secs(10));
/// assert_eq!(c.join[0].labels().get("app"), Some("x"));
/// assert!(!c.discover_config.cwd);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessDiscoveryConfig {
    /// Targets to merge into the processes by container id (see [`join`]). Static; for targets
    /// that change, use [`ProcessDiscoverer::with_join`].
    #[serde(deserialize_with = "targets_from_maps")]
    pub join: Vec<Target>,
    /// How often `/proc` is scanned again (default 60 s).
    #[serde(with = "pyro_core::config::duration")]
    pub refresh_interval: Duration,
    /// Which fields to read.
    pub discover_config: DiscoverConfig,
    /// Where procfs is mounted (default `/proc`; not an Alloy argument: set it to the host's
    /// `/proc` when running in a container with the host's procfs mounted elsewhere).
    pub proc_path: PathBuf,
}

/// `join` as Alloy writes it: a list of label maps.
fn targets_from_maps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Target>, D::Error> {
    let maps: Vec<std::collections::BTreeMap<String, String>> = Deserialize::deserialize(d)?;
    Ok(maps
        .into_iter()
        .map(|m| Target::new(m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()))
        .collect())
}

impl Default for ProcessDiscoveryConfig {
    fn default() -> Self {
        Self {
            join: Vec::new(),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            discover_config: DiscoverConfig::default(),
            proc_path: PathBuf::from("/proc"),
        }
    }
}

/// Process discovery failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The process list (the procfs directory) could not be read.
    #[error("failed to list processes in {path}: {source}")]
    ListProcesses {
        /// The procfs directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The blocking scan task failed (panicked or was cancelled).
    #[error("process scan task failed: {0}")]
    Task(String),
}

/// Scans procfs once and joins the result with `config.join`: what one refresh of
/// [`ProcessDiscoverer`] yields.
pub fn scan(config: &ProcessDiscoveryConfig) -> Result<Vec<Target>, ProcessError> {
    let processes = scan_processes(&config.proc_path, &config.discover_config)?;
    Ok(join(processes, &config.join))
}

/// Scans `proc_path` once: one target per process, in pid order.
pub fn scan_processes(
    proc_path: &Path,
    config: &DiscoverConfig,
) -> Result<Vec<Target>, ProcessError> {
    let list_err = |source| ProcessError::ListProcesses {
        path: proc_path.to_owned(),
        source,
    };
    let mut pids: Vec<u32> = std::fs::read_dir(proc_path)
        .map_err(list_err)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    pids.sort_unstable();
    let users = config.username.then(read_passwd);
    let targets: Vec<Target> = pids
        .into_iter()
        .filter_map(|pid| read_process(proc_path, pid, config, users.as_ref()))
        .collect();
    tracing::debug!(
        path = %proc_path.display(),
        processes = targets.len(),
        "Scanned processes."
    );
    Ok(targets)
}

/// Logs a per-process read failure the way Alloy does: silently for a process that vanished.
fn log_failure(pid: u32, what: &'static str, e: &io::Error) {
    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
        return;
    }
    tracing::debug!(pid, field = what, error = %e, "Failed to read process information.");
}

fn read_process(
    proc_path: &Path,
    pid: u32,
    config: &DiscoverConfig,
    users: Option<&HashMap<u32, String>>,
) -> Option<Target> {
    let dir = proc_path.join(pid.to_string());
    let mut labels: Vec<(&'static str, String)> = Vec::with_capacity(8);
    labels.push((names::PROCESS_PID, pid.to_string()));
    let link = |name: &'static str| -> Option<String> {
        std::fs::read_link(dir.join(name))
            .map(|p| p.to_string_lossy().into_owned())
            .inspect_err(|e| log_failure(pid, name, e))
            .ok()
    };
    if config.exe {
        labels.push((LABEL_EXE, link("exe")?));
    }
    if config.cwd {
        labels.push((LABEL_CWD, link("cwd")?));
    }
    if config.commandline {
        let args = pyro_core::proc::cmdline(proc_path, pid)
            .inspect_err(|e| log_failure(pid, "cmdline", e))
            .ok()?;
        labels.push((LABEL_COMMANDLINE, args.join(" ")));
    }
    if config.username || config.uid {
        match pyro_core::proc::uid(proc_path, pid) {
            Ok(uid) => {
                if config.uid {
                    labels.push((LABEL_UID, uid.to_string()));
                }
                if let Some(name) = users.and_then(|u| u.get(&uid)) {
                    labels.push((LABEL_USERNAME, name.clone()));
                }
            }
            Err(e) => log_failure(pid, "status", &e),
        }
    }
    if config.container_id || config.cgroup_path {
        let file = pyro_core::proc::cgroup(proc_path, pid)
            .inspect_err(|e| log_failure(pid, "cgroup", e))
            .ok()?;
        if config.container_id
            && let Some(id) = container_id_from_cgroup(&file)
        {
            labels.push((names::CONTAINER_ID, id.to_owned()));
        }
        if config.cgroup_path
            && let Some(path) = cgroup_path(&file)
        {
            labels.push((LABEL_CGROUP_PATH, path));
        }
    }
    // `Labels::from_iter` leaves out empty values, as Alloy does.
    Some(Target::new(Labels::from_iter(labels)))
}

/// uid → user name from `/etc/passwd` (first entry wins, as in Go's `os/user`).
fn read_passwd() -> HashMap<u32, String> {
    let mut users = HashMap::new();
    match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let mut f = line.split(':');
                if let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next())
                    && let Ok(uid) = uid.parse::<u32>()
                {
                    users.entry(uid).or_insert_with(|| name.to_owned());
                }
            }
        }
        Err(e) => tracing::debug!(path = "/etc/passwd", error = %e, "Cannot read user names."),
    }
    users
}

/// Merges `join` targets into `processes` by container id, as Alloy's `discovery.process` does:
///
/// - the container id of a target is [`Target::container_id`] (`__container_id__`, else
///   `__meta_kubernetes_pod_container_id` without its runtime prefix, else
///   `__meta_docker_container_id`);
/// - a process whose container id matches a join target gets that target's labels added, the
///   join target's labels overriding the process' own;
/// - processes without a match pass through unchanged;
/// - every join target is emitted on its own as well (so the output is the processes plus all
///   join targets); when several join targets share a container id, the last one is used for
///   merging.
///
/// Output order: join targets without a container id, the processes, then the join targets with
/// one (Alloy emits the last group in map order; here it keeps input order).
pub fn join(processes: Vec<Target>, join: &[Target]) -> Vec<Target> {
    if join.is_empty() {
        return processes;
    }
    let mut out = Vec::with_capacity(processes.len() + join.len());
    let mut by_cid: HashMap<&str, &Target> = HashMap::new();
    let mut with_cid = Vec::new();
    for t in join {
        match t.container_id() {
            Some(cid) => {
                if by_cid.insert(cid, t).is_none() {
                    with_cid.push(cid);
                }
            }
            None => out.push(t.clone()),
        }
    }
    for p in processes {
        let matched = p.container_id().and_then(|cid| by_cid.get(cid).copied());
        match matched {
            Some(container) => {
                let mut labels = p.into_labels();
                labels.merge(container.labels());
                out.push(Target::new(labels));
            }
            None => out.push(p),
        }
    }
    out.extend(
        with_cid
            .into_iter()
            .filter_map(|cid| by_cid.get(cid).map(|t| (*t).clone())),
    );
    out
}

/// Process discovery as a [`Discoverer`]: its stream scans procfs when first polled and then
/// every `refresh_interval`, yielding the joined target set whenever it differs from the last one
/// yielded.
///
/// The stream uses Tokio's timer and runs each scan on Tokio's blocking pool, so it must be
/// polled inside a Tokio runtime. A scan that fails as a whole (procfs unreadable) is logged at
/// `warn` level and the previous set stays current (the first failure yields an empty set so
/// consumers do not wait).
///
/// ```no_run
/// use futures_util::StreamExt;
/// use pyro_core::Discoverer;
/// use pyro_discovery::process::{ProcessDiscoverer, ProcessDiscoveryConfig};
///
/// # async fn run() {
/// let discovery = ProcessDiscoverer::new(ProcessDiscoveryConfig::default());
/// let mut targets = discovery.subscribe();
/// while let Some(set) = targets.next().await {
///     println!("{} processes", set.len());
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ProcessDiscoverer {
    config: Arc<ProcessDiscoveryConfig>,
    join_source: Option<Arc<dyn Discoverer>>,
}

impl ProcessDiscoverer {
    /// Discovery with `config`.
    pub fn new(config: ProcessDiscoveryConfig) -> Self {
        Self {
            config: Arc::new(config),
            join_source: None,
        }
    }

    /// Joins with the targets of another discoverer (replacing `config.join`): each new set it
    /// yields is joined with the latest scan at once, without scanning again (as Alloy does on
    /// an arguments update).
    #[must_use]
    pub fn with_join(mut self, source: Arc<dyn Discoverer>) -> Self {
        self.join_source = Some(source);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ProcessDiscoveryConfig {
        &self.config
    }
}

struct StreamState {
    config: Arc<ProcessDiscoveryConfig>,
    interval: Option<tokio::time::Interval>,
    join_stream: Option<TargetStream>,
    join: Vec<Target>,
    processes: Option<Vec<Target>>,
    last: Option<Vec<Target>>,
}

enum Event {
    Tick,
    Join(Option<Vec<Target>>),
}

impl StreamState {
    async fn next(mut self) -> Option<(Vec<Target>, Self)> {
        loop {
            let refresh = self.config.refresh_interval.max(MIN_REFRESH_INTERVAL);
            let interval = self.interval.get_or_insert_with(|| {
                let mut i = tokio::time::interval(refresh);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            let event = match &mut self.join_stream {
                Some(js) if self.processes.is_some() => {
                    match select(std::pin::pin!(interval.tick()), js.next()).await {
                        Either::Left(_) => Event::Tick,
                        Either::Right((update, _)) => Event::Join(update),
                    }
                }
                _ => {
                    interval.tick().await;
                    Event::Tick
                }
            };
            match event {
                Event::Tick => {
                    let config = Arc::clone(&self.config);
                    let scanned = tokio::task::spawn_blocking(move || {
                        scan_processes(&config.proc_path, &config.discover_config)
                    })
                    .await
                    .map_err(|e| ProcessError::Task(e.to_string()))
                    .and_then(|r| r);
                    match scanned {
                        Ok(p) => self.processes = Some(p),
                        Err(e) => {
                            tracing::warn!(error = %e, "Process discovery failed.");
                            if self.processes.is_some() {
                                continue;
                            }
                            self.processes = Some(Vec::new());
                        }
                    }
                }
                Event::Join(Some(targets)) => self.join = targets,
                Event::Join(None) => {
                    self.join_stream = None;
                    continue;
                }
            }
            let processes = self.processes.clone().unwrap_or_default();
            let out = join(processes, &self.join);
            if self.last.as_ref() == Some(&out) {
                continue;
            }
            self.last = Some(out.clone());
            return Some((out, self));
        }
    }
}

impl Discoverer for ProcessDiscoverer {
    fn subscribe(&self) -> TargetStream {
        let mut join_stream = self.join_source.as_ref().map(|d| d.subscribe());
        let mut join = self.config.join.clone();
        // Take a join set that is ready now (a static list is), so the first item is joined.
        if let Some(js) = &mut join_stream {
            match js.next().now_or_never() {
                Some(Some(first)) => join = first,
                Some(None) => join_stream = None,
                None => {}
            }
        }
        let state = StreamState {
            config: Arc::clone(&self.config),
            interval: None,
            join_stream,
            join,
            processes: None,
            last: None,
        };
        futures_util::stream::unfold(state, StreamState::next).boxed()
    }
}

#[cfg(test)]
mod tests;
