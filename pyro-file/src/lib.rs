//! pyro's local, server-free output: a [`Sink`] that writes every profile into a directory as a
//! gzipped pprof file (`*.pb.gz`, readable by `go tool pprof`) and an SVG flame graph (`*.svg`,
//! drawn with `inferno`).
//!
//! It sits at the end of a pipeline, like the Pyroscope writer does: wrap it in a
//! [`SinkReceiver`](pyro_core::SinkReceiver) (or a [`Fanout`](pyro_core::Fanout)) and hand it to
//! the eBPF collector or the HTTP receiver as a `forward_to` receiver.
//!
//! ```no_run
//! use std::sync::Arc;
//! use pyro_core::{DynReceiver, SinkReceiver};
//! use pyro_file::FileSink;
//!
//! let sink = FileSink::new("profiles").expect("create the directory");
//! let receiver: DynReceiver = Arc::new(SinkReceiver::new(sink));
//! // … give `receiver` to a collector's `forward_to`.
//! # let _ = receiver;
//! ```
//!
//! Every label of the profile (`service_name`, `__name__`, target labels such as `region`,
//! enriched labels, `__container_id__`, …) is kept *inside* the pprof file, as a string label on
//! every sample: `go tool pprof -tags` lists them and `-tagfocus region=eu-west-1` filters by
//! them. A label the sample already carries (an SDK's own per-sample label) is left as the
//! sample has it; labels with an empty value are left out. This was chosen over a sidecar
//! file so that one file is the whole profile and every pprof tool sees the labels; the price
//! is that a labelled profile is decoded and re-encoded (samples, stacks and values unchanged;
//! the sink decodes every profile for its flame graph anyway). A profile without labels is
//! written byte for byte.
//!
//! Files are named `<service_name>.<profile type>.<unix seconds>-<sequence>.pb.gz` (and `.svg`),
//! with characters other than `[A-Za-z0-9._-]` in the service name replaced by `_`. Writing is
//! plain blocking file I/O on the calling task: the sink is meant for local runs and tests, where
//! a profile every few seconds is written in well under a millisecond.
#![deny(missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pyro_core::pprof::{self, DEFAULT_MAX_DECODED_SIZE, PprofError};
use pyro_core::{Labels, Profile, Sink, SinkError};

/// A profile could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileSinkError {
    /// The payload is not a readable pprof profile.
    #[error("profile payload is not a pprof profile: {0}")]
    Pprof(#[from] PprofError),
    /// A file or directory operation failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The flame graph could not be drawn.
    #[error("cannot draw the flame graph {path}: {source}")]
    FlameGraph {
        /// The SVG path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What [`FileSink::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The gzipped pprof file.
    pub pprof: PathBuf,
    /// The flame graph, unless the profile had no samples.
    pub svg: Option<PathBuf>,
}

/// Writes profiles into a directory as `*.pb.gz` + `*.svg`. See the [crate docs](crate).
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    name: String,
    seq: AtomicU64,
    flame_graphs: bool,
}

impl FileSink {
    /// A sink writing into `dir`, which is created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, FileSinkError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| FileSinkError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            name: format!("file:{}", dir.display()),
            dir,
            seq: AtomicU64::new(0),
            flame_graphs: true,
        })
    }

    /// Whether to draw an SVG flame graph next to each pprof file (default true).
    #[must_use]
    pub fn with_flame_graphs(mut self, on: bool) -> Self {
        self.flame_graphs = on;
        self
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one profile, its labels as sample labels (see the [crate docs](crate)),
    /// returning the paths written.
    pub fn write(&self, profile: &Profile) -> Result<Written, FileSinkError> {
        let mut decoded = pprof::decode(&profile.raw, DEFAULT_MAX_DECODED_SIZE)?;
        let stem = self.stem(profile);
        let pprof_path = self.dir.join(format!("{stem}.pb.gz"));
        let gz = if add_sample_labels(&mut decoded, &profile.labels) {
            // Level 1, as Alloy compresses.
            pprof::encode_gzip(&decoded, 1)
        } else if profile.is_gzipped() {
            profile.raw.to_vec()
        } else {
            pprof::gzip(&profile.raw, 1)
        };
        fs::write(&pprof_path, gz).map_err(|source| FileSinkError::Io {
            path: pprof_path.clone(),
            source,
        })?;
        let svg = if self.flame_graphs {
            let title = format!(
                "{} ({})",
                profile.service_name().unwrap_or("unknown service"),
                profile.profile_type().unwrap_or("profile")
            );
            let svg_path = self.dir.join(format!("{stem}.svg"));
            write_flame_graph(&decoded, &title, &svg_path)?.then_some(svg_path)
        } else {
            None
        };
        tracing::debug!(path = %pprof_path.display(), svg = svg.is_some(), "Wrote profile.");
        Ok(Written {
            pprof: pprof_path,
            svg,
        })
    }

    fn stem(&self, profile: &Profile) -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.{}.{secs}-{seq}",
            sanitize(profile.service_name().unwrap_or("unknown")),
            sanitize(profile.profile_type().unwrap_or("profile")),
        )
    }
}

/// Adds every non-empty label of `labels` as a string label to every sample of `profile` that
/// does not carry that key already. Returns whether anything was added.
fn add_sample_labels(profile: &mut pprof::Profile, labels: &Labels) -> bool {
    let mut added = false;
    for label in labels.iter().filter(|l| !l.value().is_empty()) {
        let mut interned: Option<(i64, i64)> = None;
        for i in 0..profile.sample.len() {
            let has_key = profile.sample[i]
                .label
                .iter()
                .any(|l| profile.string(l.key) == label.name());
            if has_key {
                continue;
            }
            let (key, value) = *interned.get_or_insert_with(|| {
                (
                    intern(&mut profile.string_table, label.name()),
                    intern(&mut profile.string_table, label.value()),
                )
            });
            profile.sample[i].label.push(pprof::Label {
                key,
                str: value,
                num: 0,
                num_unit: 0,
            });
            added = true;
        }
    }
    added
}

/// The index of `s` in a pprof string table, appending it when missing.
fn intern(table: &mut Vec<String>, s: &str) -> i64 {
    let index = table.iter().position(|t| t == s).unwrap_or_else(|| {
        table.push(s.to_owned());
        table.len() - 1
    });
    i64::try_from(index).unwrap_or(i64::MAX)
}

fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Never produce a hidden file or a path component like `..`.
    out.trim_start_matches('.').to_owned()
}

/// Draws `profile` (its default sample type) as an SVG flame graph at `path`. Returns false,
/// writing nothing, when the profile has no non-zero samples.
pub fn write_flame_graph(
    profile: &pprof::Profile,
    title: &str,
    path: &Path,
) -> Result<bool, FileSinkError> {
    let index = profile.default_sample_index();
    let stacks = pprof::folded(profile, index);
    if stacks.is_empty() {
        return Ok(false);
    }
    // inferno reads folded lines; `;` separates frames, so it is escaped inside names.
    let lines: Vec<String> = stacks
        .iter()
        .map(|s| {
            let frames: Vec<String> = s.frames.iter().map(|f| f.replace(';', ":")).collect();
            format!("{} {}", frames.join(";"), s.value)
        })
        .collect();
    let unit = profile
        .sample_types()
        .get(index)
        .map_or("samples", |(_, unit)| *unit)
        .to_owned();
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = unit;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
        .map_err(|source| FileSinkError::FlameGraph {
            path: path.to_owned(),
            source,
        })?;
    fs::write(path, svg).map_err(|source| FileSinkError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, profile: &Profile) -> Result<(), SinkError> {
        match self.write(profile) {
            Ok(_) => Ok(()),
            Err(e @ FileSinkError::Pprof(_)) => Err(SinkError::invalid_input(&self.name, e)),
            Err(e) => Err(SinkError::retryable(&self.name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_names_stay_in_the_directory() {
        assert_eq!(sanitize("../etc/passwd"), "_etc_passwd");
        assert_eq!(sanitize("ebpf/ns/app"), "ebpf_ns_app");
        assert_eq!(sanitize("ok-name_1.2"), "ok-name_1.2");
    }
}
