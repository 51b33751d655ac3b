//! Starter templates for pyro; the programs live in `examples/`.
