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
