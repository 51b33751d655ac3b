//! pyro-ebpf (skeleton, being built).
