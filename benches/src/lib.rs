//! Criterion benchmarks for the pyro crates, one file per hot path under `benches/`, with
//! side-by-side runs against peers where an issue names one. Figures, the command that
//! reproduces each and its date are in `BENCHMARKS.md`.
//!
//! This library holds the fixtures the benchmarks share, so that every bench measures the same
//! kind of input:
//!
//! ```
//! let profile = pyro_benches::cpu_profile(10 * 1024);
//! assert!(profile.raw.len() >= 10 * 1024);
//! assert_eq!(profile.profile_type(), Some("process_cpu"));
//! ```
#![deny(missing_docs)]

/// Thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) as a criterion measurement: what the work costs
/// on one core, unaffected by other processes competing for the machine's cores.
pub mod cpu_time {
    use criterion::measurement::{Measurement, ValueFormatter, WallTime};

    /// The measurement; use with `Criterion::default().with_measurement(ThreadCpuTime)`.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ThreadCpuTime;

    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; this clock always exists on Linux.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    impl Measurement for ThreadCpuTime {
        type Intermediate = u64;
        type Value = u64;

        fn start(&self) -> u64 {
            now_ns()
        }
        fn end(&self, start: u64) -> u64 {
            now_ns().saturating_sub(start)
        }
        fn add(&self, a: &u64, b: &u64) -> u64 {
            a + b
        }
        fn zero(&self) -> u64 {
            0
        }
        fn to_f64(&self, v: &u64) -> f64 {
            *v as f64
        }
        fn formatter(&self) -> &dyn ValueFormatter {
            // Nanoseconds, formatted like wall time.
            static WALL: WallTime = WallTime;
            WALL.formatter()
        }
    }
}

use pyro_core::pprof::{ProfileBuilder, encode_gzip};
use pyro_core::{Labels, Profile};

/// A realistic gzipped CPU profile of at least `min_bytes` bytes (compressed): distinct stacks
/// 12 frames deep over a pool of long, C++-like function names, labelled like an eBPF target.
pub fn cpu_profile(min_bytes: usize) -> Profile {
    let mut builder = ProfileBuilder::cpu(97);
    let period = builder.period();
    let mut raw = Vec::new();
    let mut stacks = 0u64;
    while raw.len() < min_bytes {
        for _ in 0..50 {
            let frames: Vec<String> = (0..12u64)
                .map(|depth| {
                    let f = (stacks.wrapping_mul(2_654_435_761) >> (depth * 3)) % 400;
                    format!("ns{depth}::Component{f}::handle_request_{}", f * 7 + depth)
                })
                .collect();
            builder.add_folded(&frames, &[(1 + (stacks % 13) as i64) * period]);
            stacks += 1;
        }
        raw = encode_gzip(&builder.clone().build(), 1);
    }
    Profile::new(
        Labels::from_iter([
            ("__name__", "process_cpu"),
            ("service_name", "bench/service"),
            ("namespace", "bench"),
            ("pod", "bench-7d9f8b6c4-x2x9z"),
            ("container", "app"),
        ]),
        raw,
    )
}
