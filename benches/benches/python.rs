//! CPython support (`pyro-python`): what the collector pays once per new Python process
//! (`detect`: maps, ELF symbols, version, thread-state key calibration) and what one reference
//! walk of every thread's Python stack costs through `/proc/PID/mem` (3 threads, 5 frames each).
//! The BPF walker reads fewer (code object addresses only; names are read once per code object);
//! its cost is measured by `pyro-ebpf/examples/python_cost.rs`.
//!
//! Runs on Debian's `/usr/bin/python3.11` and the pyenv 3.11 build (shared libpython with full
//! `.symtab`) when present; needs root (reading another process's memory).
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use criterion::{Criterion, criterion_group, criterion_main};

struct Workload(Child);

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pythons() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let debian = PathBuf::from("/usr/bin/python3.11");
    if debian.exists() {
        out.push(("debian-3.11".to_string(), debian));
    }
    let home = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv")
        });
    if let Ok(dir) = std::fs::read_dir(home.join("versions")) {
        let mut v: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("3.11."))
            })
            .collect();
        v.sort();
        if let Some(p) = v.pop() {
            out.push(("pyenv-3.11".to_string(), p.join("bin/python3.11")));
        }
    }
    out
}

fn start(exe: &PathBuf) -> Workload {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pyro-python/tests/workload/main.py");
    let mut child = Command::new(exe)
        .arg(script)
        .arg("idle")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        lines.next().expect("ready line").expect("read");
    }
    Workload(child)
}

fn bench(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: reading another process's memory needs root");
        return;
    }
    let mut g = c.benchmark_group("python");
    g.sample_size(30);
    for (label, exe) in pythons() {
        let w = start(&exe);
        let pid = w.0.id();
        g.bench_function(format!("detect/{label}"), |b| {
            b.iter(|| black_box(pyro_python::detect(pid).expect("detect").expect("python")))
        });
        let walker = pyro_python::ReferenceWalker::new(pid)
            .expect("detect")
            .expect("python");
        g.bench_function(format!("walk_3_threads/{label}"), |b| {
            b.iter(|| black_box(walker.stacks().expect("walk")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
