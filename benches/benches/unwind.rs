//! Unwind tables (`pyro-unwind`): what the collector pays once per distinct executable file —
//! building its table from `.eh_frame` — and what the table costs in kernel memory (8 B per row,
//! 24 B per page entry), for libc and a binary over 50 MB (`librustc_driver-*.so` of the
//! toolchain). The file is read once outside the timed loop (the collector maps it).
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use pyro_unwind::Table;

fn files() -> Vec<(String, PathBuf)> {
    let mut out = vec![(
        "libc.so.6".to_string(),
        PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
    )];
    if let Ok(o) = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
    {
        let lib = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib");
        if let Some(p) = std::fs::read_dir(lib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("librustc_driver-"))
            })
        {
            out.push(("librustc_driver".to_string(), p));
        }
    }
    out
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("unwind_table_build");
    group.sample_size(10);
    for (name, path) in files() {
        let data = std::fs::read(&path).expect("read");
        let table = Table::from_elf(&data).expect("table");
        let s = table.stats();
        eprintln!(
            "{name}: {} MB file, {} FDEs, {} rows ({} unsupported), {} pages, {} bytes ({:.2} MiB)",
            data.len() >> 20,
            s.fdes,
            s.rows,
            s.unsupported_rows,
            s.pages,
            s.bytes,
            s.bytes as f64 / (1 << 20) as f64
        );
        group.bench_function(&name, |b| {
            b.iter(|| Table::from_elf(black_box(&data)).unwrap())
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").expect("read");
    let table = Table::from_elf(&data).expect("table");
    let pcs: Vec<u64> = (0..4096u64).map(|i| 0x28000 + i * 397).collect();
    c.bench_function("unwind_table_lookup_libc_4096", |b| {
        b.iter(|| {
            pcs.iter()
                .filter_map(|&pc| table.lookup(black_box(pc)))
                .count()
        })
    });
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
