//! pyro-ebpf-common (skeleton, being built).
