//! The thread-pointer offset from BTF, checked against bpftrace's own BTF-based field access:
//! both read the same task, one through `curtask->thread.fsbase`, the other at our offset.

#[test]
fn thread_pointer_offset_matches_bpftrace() {
    let btf = pyro_python::Btf::load(pyro_python::kernel::VMLINUX_BTF).expect("kernel BTF");
    let off = pyro_python::thread_pointer_offset(&btf).expect("offset");
    assert!(off > 0 && off < 64 * 1024, "{off}");
    if !pyro_testkit::bpf_available() {
        return;
    }
    let script = format!(
        "BEGIN {{ printf(\"%lu %lu\\n\", curtask->thread.fsbase, *(uint64 *)((uint64)curtask + {off})); exit(); }}"
    );
    let Some(text) = pyro_testkit::bpftrace(&script) else {
        return;
    };
    let line = text
        .lines()
        .find(|l| l.split(' ').count() == 2 && l.chars().all(|c| c.is_ascii_digit() || c == ' '))
        .unwrap_or_else(|| panic!("no values in: {text}"));
    let (a, b) = line.split_once(' ').expect("two values");
    let (a, b): (u64, u64) = (a.parse().expect("fsbase"), b.parse().expect("ours"));
    assert_ne!(a, 0, "bpftrace runs on glibc: its fsbase is set");
    assert_eq!(a, b, "task_struct.thread.fsbase at offset {off}");
    eprintln!("task_struct thread pointer at offset {off} (fsbase {a:#x})");
}
