//! Aggregation of symbolized stacks between collections, and the pprof built from them: one per
//! (target, process), like Alloy's legacy engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyro_core::Profile;
use pyro_core::pprof::{ProfileBuilder, encode_gzip};

use crate::targets::ResolvedTarget;

/// Stacks of one process matched to one target, root first (user frames, then kernel frames;
/// the process name is added as root when the pprof is built).
#[derive(Debug)]
struct ProcessSamples {
    target: Arc<ResolvedTarget>,
    comm: Arc<str>,
    stacks: HashMap<Box<[Arc<str>]>, u64>,
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
    started: SystemTime,
    processes: HashMap<(u64, u32), ProcessSamples>,
}

impl Aggregator {
    pub(crate) fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate,
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
        stack: Box<[Arc<str>]>,
        count: u64,
    ) {
        let entry = self
            .processes
            .entry((target.fingerprint, pid))
            .or_insert_with(|| ProcessSamples {
                target: target.clone(),
                comm: comm.clone(),
                stacks: HashMap::new(),
            });
        *entry.stacks.entry(stack).or_insert(0) += count;
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
            .map(|(_, p)| {
                let mut builder = ProfileBuilder::cpu(self.sample_rate);
                builder.set_time(nanos(start), duration);
                let period = builder.period();
                let mut samples = 0u64;
                let mut frames: Vec<&str> = Vec::new();
                for (stack, count) in &p.stacks {
                    frames.clear();
                    frames.push(&p.comm);
                    frames.extend(stack.iter().map(|f| &**f));
                    let value = i64::try_from(*count)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(period);
                    builder.add_folded(&frames, &[value]);
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
        let stack = |names: &[&str]| names.iter().map(|n| Arc::from(*n)).collect::<Box<[_]>>();
        let mut agg = Aggregator::new(100);
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
}
