//! Criterion benchmarks for the pyro crates; see `BENCHMARKS.md` for the figures.
