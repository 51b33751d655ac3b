//! The per-version struct offset table and the per-process configuration of the BPF walker,
//! re-exported from [`pyro_ebpf_common::python`], where they live so that the kernel side
//! (`bpf-programs/`) and user space share one definition.

pub use pyro_ebpf_common::python::*;
