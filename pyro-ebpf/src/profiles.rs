//! Aggregation of symbolized stacks between collections, and the pprof built from them: one per
//! (target, process), like Alloy's legacy engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyro_core::Profile;
use pyro_core::pprof::{MappingFlags, ProfileBuilder, encode_gzip};
use pyro_symbolize::{FileInfo, Frame};

use crate::targets::ResolvedTarget;

/// One frame of an aggregated stack: a name (Python, kernel, unknown), or a native user frame
/// with its file, address and source lines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StackFrame {
    Name(Arc<str>),
    Native(Arc<Frame>),
}

impl StackFrame {
    /// A user frame: native when it lies in a mapped file at a known address, else its name.
    pub(crate) fn user(frame: Frame) -> Self {
        if frame.file.is_some() && frame.address != 0 {
            Self::Native(Arc::new(frame))
        } else {
            Self::Name(frame.name)
        }
    }
}

/// The pprof location of `frame`: for native frames one Location per (file, address) with
/// one Line per inlined function (innermost first) and the mapping's `has_*` set from what the
/// file's symbols carry; names get a location of their own.
fn location(
    b: &mut ProfileBuilder,
    mappings: &mut HashMap<Arc<FileInfo>, u64>,
    frame: &StackFrame,
) -> u64 {
    let f = match frame {
        StackFrame::Name(name) => return b.frame(name),
        StackFrame::Native(f) => f,
    };
    let Some(file) = &f.file else {
        return b.frame(&f.name);
    };
    let mapping = *mappings.entry(file.clone()).or_insert_with(|| {
        let lines = file.has_debug_info;
        b.add_mapping_with_flags(
            0,
            0,
            0,
            &file.path,
            &file.build_id,
            MappingFlags {
                has_functions: true,
                has_filenames: lines,
                has_line_numbers: lines,
                has_inline_frames: lines,
            },
        )
    });
    let lines: Vec<(u64, i64)> = if f.lines.is_empty() {
        vec![(b.function(&f.name, ""), 0)]
    } else {
        f.lines
            .iter()
            .map(|l| {
                let name = if l.function.is_empty() {
                    &f.name
                } else {
                    &l.function
                };
                let id = b.function_at(
                    name,
                    l.file.as_deref().unwrap_or(""),
                    i64::from(l.start_line),
                );
                (id, i64::from(l.line))
            })
            .collect()
    };
    b.line_location(mapping, f.address, &lines)
}

/// Stacks of one process matched to one target, root first (user frames, then kernel frames;
/// the process name is added as root when the pprof is built).
#[derive(Debug)]
struct ProcessSamples {
    target: Arc<ResolvedTarget>,
    /// Stacks by the process name they are rooted at: a process that execs another program
    /// within an interval has samples under both names.
    stacks: HashMap<(Arc<str>, Box<[StackFrame]>), u64>,
}

/// A profile built by [`Aggregator::build`] with what it holds.
#[derive(Debug)]
pub(crate) struct BuiltProfile {
    pub(crate) profile: Profile,
    pub(crate) service_name: String,
    pub(crate) samples: u64,
}

/// Samples of the current interval, per (target, pid).
#[derive(Debug)]
pub(crate) struct Aggregator {
    sample_rate: u32,
    /// Add the sample label `pid` (`pid_label`).
    pid_label: bool,
    started: SystemTime,
    processes: HashMap<(u64, u32), ProcessSamples>,
}

impl Aggregator {
    pub(crate) fn new(sample_rate: u32, pid_label: bool) -> Self {
        Self {
            sample_rate,
            pid_label,
            started: SystemTime::now(),
            processes: HashMap::new(),
        }
    }

    /// Adds `count` samples of `stack` (root first) for process `pid` of `target`.
    pub(crate) fn add(
        &mut self,
        target: &Arc<ResolvedTarget>,
        pid: u32,
        comm: &Arc<str>,
        stack: Box<[StackFrame]>,
        count: u64,
    ) {
        let entry = self
            .processes
            .entry((target.fingerprint, pid))
            .or_insert_with(|| ProcessSamples {
                target: target.clone(),
                stacks: HashMap::new(),
            });
        *entry.stacks.entry((comm.clone(), stack)).or_insert(0) += count;
    }

    /// Whether nothing was added since the last build.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Builds one gzipped pprof per (target, pid) from everything added since the last build,
    /// and starts a new interval.
    pub(crate) fn build(&mut self) -> Vec<BuiltProfile> {
        let now = SystemTime::now();
        let start = std::mem::replace(&mut self.started, now);
        let nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_nanos()
                .try_into()
                .unwrap_or(i64::MAX)
        };
        let duration: i64 = now
            .duration_since(start)
            .unwrap_or(Duration::ZERO)
            .as_nanos()
            .try_into()
            .unwrap_or(i64::MAX);
        let mut processes: Vec<_> = self.processes.drain().collect();
        processes.sort_by_key(|(key, _)| *key);
        processes
            .into_iter()
            .map(|((_, pid), p)| {
                let pid = pid.to_string();
                let sample_labels: &[(&str, &str)] = if self.pid_label {
                    &[("pid", &pid)]
                } else {
                    &[]
                };
                let mut builder = ProfileBuilder::cpu(self.sample_rate);
                builder.set_time(nanos(start), duration);
                let period = builder.period();
                let mut samples = 0u64;
                let mut mappings = HashMap::new();
                let mut locations: Vec<u64> = Vec::new();
                for ((comm, stack), count) in &p.stacks {
                    // Leaf first, the process name as root.
                    locations.clear();
                    for f in stack.iter().rev() {
                        locations.push(location(&mut builder, &mut mappings, f));
                    }
                    locations.push(builder.frame(comm));
                    let value = i64::try_from(*count)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(period);
                    builder.add_sample_with_labels(&locations, &[value], sample_labels);
                    samples += count;
                }
                BuiltProfile {
                    profile: Profile::new(
                        p.target.labels.clone(),
                        encode_gzip(&builder.build(), 1),
                    ),
                    service_name: p.target.service_name.clone(),
                    samples,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use pyro_core::pprof::{DEFAULT_MAX_DECODED_SIZE, decode, folded};
    use pyro_core::{Labels, Target};

    use super::*;
    use crate::targets::TargetIndex;

    #[test]
    fn one_profile_per_target_and_pid_with_comm_root() {
        let idx = TargetIndex::new(&[
            Target::new(Labels::from_iter([
                ("__process_pid__", "1"),
                ("service_name", "a"),
            ])),
            Target::new(Labels::from_iter([
                ("__process_pid__", "2"),
                ("service_name", "b"),
            ])),
        ]);
        let (a, b) = (
            idx.lookup(1, || None).unwrap(),
            idx.lookup(2, || None).unwrap(),
        );
        let comm: Arc<str> = Arc::from("app");
        let stack = |names: &[&str]| {
            names
                .iter()
                .map(|n| StackFrame::Name(Arc::from(*n)))
                .collect::<Box<[_]>>()
        };
        let mut agg = Aggregator::new(100, false);
        agg.add(&a, 1, &comm, stack(&["main", "work"]), 3);
        agg.add(&a, 1, &comm, stack(&["main", "work"]), 2);
        agg.add(&a, 1, &comm, stack(&["main", "idle"]), 1);
        agg.add(&b, 2, &comm, stack(&["main"]), 7);
        let built = agg.build();
        assert!(agg.is_empty());
        assert_eq!(built.len(), 2);
        let first = built.iter().find(|p| p.service_name == "a").unwrap();
        assert_eq!(first.samples, 6);
        assert_eq!(first.profile.labels.get("__name__"), Some("process_cpu"));
        let pprof = decode(&first.profile.raw, DEFAULT_MAX_DECODED_SIZE).unwrap();
        assert_eq!(pprof.period, 10_000_000);
        assert_eq!(pprof.sample_types(), [("cpu", "nanoseconds")]);
        let stacks: Vec<(String, i64)> = folded(&pprof, 0)
            .into_iter()
            .map(|s| (s.frames.join(";"), s.value))
            .collect();
        assert_eq!(
            stacks,
            [
                ("app;main;idle".to_owned(), 10_000_000),
                ("app;main;work".to_owned(), 50_000_000)
            ]
        );
        assert!(pprof.duration_nanos >= 0 && pprof.time_nanos > 0);
    }

    #[test]
    fn pid_label_is_on_every_sample_when_asked() {
        let idx = TargetIndex::with_default(&[], false);
        let rest = idx.lookup(7, || None).unwrap();
        let comm: Arc<str> = Arc::from("sh");
        let frames = |n: &str| Box::from([StackFrame::Name(Arc::from(n))]);
        for (pid_label, want) in [(true, vec![vec!["7".to_owned()]; 2]), (false, vec![])] {
            let mut agg = Aggregator::new(100, pid_label);
            agg.add(&rest, 7, &comm, frames("a"), 1);
            agg.add(&rest, 7, &comm, frames("b"), 1);
            let built = agg.build();
            let pprof = decode(&built[0].profile.raw, DEFAULT_MAX_DECODED_SIZE).unwrap();
            let pids: Vec<Vec<String>> = pprof
                .sample
                .iter()
                .map(|s| {
                    s.label
                        .iter()
                        .filter(|l| pprof.string(l.key) == "pid")
                        .map(|l| pprof.string(l.str).to_owned())
                        .collect()
                })
                .filter(|v: &Vec<String>| !v.is_empty())
                .collect();
            assert_eq!(pids, want, "pid_label {pid_label}");
        }
    }

    #[test]
    fn native_frames_become_locations_with_inline_lines_that_go_tool_pprof_shows() {
        use pyro_symbolize::SourceFrame;
        let idx = TargetIndex::new(&[Target::new(Labels::from_iter([
            ("__process_pid__", "1"),
            ("service_name", "a"),
        ]))]);
        let target = idx.lookup(1, || None).unwrap();
        let file = Arc::new(FileInfo {
            path: Arc::from("/usr/bin/app"),
            build_id: Arc::from("0badc0de"),
            has_debug_info: true,
        });
        let line = |function: &str, file: &str, line: u32, start_line: u32| SourceFrame {
            function: Arc::from(function),
            file: Some(Arc::from(file)),
            line,
            start_line,
        };
        let leaf = Frame {
            name: Arc::from("outer"),
            module: Arc::from("app"),
            resolved: true,
            address: 0x1234,
            file: Some(file.clone()),
            lines: Arc::from(vec![
                line("leaf", "/src/lib.h", 7, 5),
                line("outer", "/src/app.c", 42, 40),
            ]),
        };
        let main = Frame {
            name: Arc::from("main"),
            address: 0x1100,
            lines: Arc::from(vec![line("main", "/src/app.c", 60, 58)]),
            ..leaf.clone()
        };
        let no_lines = Frame {
            name: Arc::from("helper"),
            address: 0x1400,
            file: Some(Arc::new(FileInfo {
                path: Arc::from("/usr/lib/libx.so"),
                build_id: Arc::from(""),
                has_debug_info: false,
            })),
            lines: Arc::from(Vec::new()),
            ..leaf.clone()
        };
        let stack: Box<[StackFrame]> = [main, no_lines, leaf]
            .into_iter()
            .map(StackFrame::user)
            .chain([StackFrame::Name(Arc::from("do_syscall_64"))])
            .collect();
        let mut agg = Aggregator::new(100, false);
        agg.add(&target, 1, &Arc::from("app"), stack, 3);
        let built = agg.build();
        let pprof = decode(&built[0].profile.raw, DEFAULT_MAX_DECODED_SIZE).unwrap();
        pyro_core::pprof::check_valid(&pprof).unwrap();
        // Inline frames expand in order: callers first.
        let stacks: Vec<String> = folded(&pprof, 0)
            .into_iter()
            .map(|s| s.frames.join(";"))
            .collect();
        assert_eq!(stacks, ["app;main;helper;outer;leaf;do_syscall_64"]);
        // One location for the leaf address, with two lines, innermost first.
        let loc = pprof.location.iter().find(|l| l.address == 0x1234).unwrap();
        let lines: Vec<(&str, &str, i64, i64)> = loc
            .line
            .iter()
            .map(|l| {
                let f = &pprof.function[(l.function_id - 1) as usize];
                (
                    pprof.string(f.name),
                    pprof.string(f.filename),
                    f.start_line,
                    l.line,
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("leaf", "/src/lib.h", 5, 7),
                ("outer", "/src/app.c", 40, 42)
            ]
        );
        let app = &pprof.mapping[(loc.mapping_id - 1) as usize];
        assert_eq!(pprof.string(app.filename), "/usr/bin/app");
        assert_eq!(pprof.string(app.build_id), "0badc0de");
        assert!(app.has_functions && app.has_filenames && app.has_line_numbers);
        assert!(app.has_inline_frames);
        let libx = pprof
            .mapping
            .iter()
            .find(|m| pprof.string(m.filename) == "/usr/lib/libx.so")
            .unwrap();
        assert!(libx.has_functions && !libx.has_filenames && !libx.has_line_numbers);

        // go tool pprof reads it, and -lines shows file:line per inline level.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.pb.gz");
        std::fs::write(&path, &built[0].profile.raw).unwrap();
        if let Some(out) = pyro_testkit::go_pprof(&["-lines", "-traces"], &path) {
            for want in [
                "leaf /src/lib.h:7 (inline)",
                "outer /src/app.c:42",
                "main /src/app.c:60",
            ] {
                assert!(out.contains(want), "{want:?} not in:\n{out}");
            }
        }
    }
}
