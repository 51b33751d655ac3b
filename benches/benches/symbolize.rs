//! Symbolization: names-only lookups of 20 000 addresses in `libc.so.6` and in the stable
//! toolchain's `librustc_driver-*.so`, cold (fresh table / symbolizer) and warm, side by side
//! with blazesym 0.2.7 (`symbolize::source::Elf`, debug symbols off, no code info, no inlined
//! functions) on the same ELF virtual addresses. Raw names and fully demangled names are measured
//! separately (blazesym demangles per lookup; pyro stores each demangled name once).
//!
//! Both sides use their batch API (`ElfSymbols::lookup_many`, `Symbolizer::symbolize`).
//! `PYRO_BENCH_QUICK=1` shortens the runs.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use object::{Object, ObjectSymbol, SymbolKind};
use pyro_symbolize::{Demangle, ElfSymbols};

const ADDRS: usize = 20_000;

fn libc() -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn rustc_driver() -> Option<PathBuf> {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let lib = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()).join("lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("librustc_driver-") && n.ends_with(".so"))
        })
}

/// 20 000 addresses inside sized function symbols, chosen by a fixed pseudo-random sequence
/// (symbol, then offset inside it), read with `object` independently of both symbolizers.
fn addresses(path: &Path) -> Vec<u64> {
    let data = std::fs::read(path).expect("read ELF");
    let file = object::File::parse(&*data).expect("parse ELF");
    let funcs: Vec<(u64, u64)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0 && s.address() > 0)
        .map(|s| (s.address(), s.size()))
        .collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..ADDRS)
        .map(|_| {
            let (a, size) = funcs[(next() % funcs.len() as u64) as usize];
            a + next() % size
        })
        .collect()
}

fn blaze(demangle: bool) -> Blaze {
    Blaze::builder()
        .enable_code_info(false)
        .enable_inlined_fns(false)
        .enable_demangling(demangle)
        .build()
}

fn blaze_source(path: &Path) -> Source<'static> {
    let mut elf = Elf::new(path);
    elf.debug_syms = false;
    Source::Elf(elf)
}

/// Sum of name lengths, so that every name is produced and read.
fn blaze_run(b: &Blaze, src: &Source<'_>, addrs: &[u64]) -> usize {
    b.symbolize(src, Input::VirtOffset(addrs))
        .expect("blazesym")
        .iter()
        .map(|s| match s {
            Symbolized::Sym(sym) => sym.name.len(),
            Symbolized::Unknown(_) => 0,
        })
        .sum()
}

fn pyro_run(t: &ElfSymbols, addrs: &[u64]) -> usize {
    t.lookup_many(addrs)
        .iter()
        .map(|n| n.map_or(0, |n| n.len()))
        .sum()
}

fn bench_file(c: &mut Criterion, label: &str, path: &Path) {
    let addrs = addresses(path);
    for (mode_label, mode, blaze_demangle) in [
        ("raw", Demangle::None, false),
        ("demangled", Demangle::Full, true),
    ] {
        // Sanity: both resolve the same addresses to names of the same total length.
        let table = ElfSymbols::load(path, mode).expect("load");
        let src = blaze_source(path);
        let warm_blaze = blaze(blaze_demangle);
        let (p, bz) = (
            pyro_run(&table, &addrs),
            blaze_run(&warm_blaze, &src, &addrs),
        );
        let resolved = addrs.iter().filter(|&&a| table.lookup(a).is_some()).count();
        eprintln!(
            "{label}/{mode_label}: {} symbols, {resolved}/{} resolved; name bytes pyro {p}, blazesym {bz}",
            table.len(),
            addrs.len()
        );

        let mut g = c.benchmark_group(format!("symbolize_{label}_{mode_label}"));
        configure(&mut g);
        g.throughput(Throughput::Elements(addrs.len() as u64));
        g.bench_function("pyro_cold", |b| {
            b.iter(|| {
                let t = ElfSymbols::load(black_box(path), mode).expect("load");
                pyro_run(&t, &addrs)
            })
        });
        g.bench_function("blazesym_cold", |b| {
            b.iter(|| blaze_run(&blaze(blaze_demangle), &src, black_box(&addrs)))
        });
        g.bench_function("pyro_warm", |b| {
            b.iter(|| pyro_run(&table, black_box(&addrs)))
        });
        g.bench_function("blazesym_warm", |b| {
            b.iter(|| blaze_run(&warm_blaze, &src, black_box(&addrs)))
        });
        g.finish();
    }
}

fn configure(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let quick = std::env::var("PYRO_BENCH_QUICK").is_ok_and(|v| v == "1");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(if quick { 2 } else { 8 }));
}

fn symbolize(c: &mut Criterion) {
    match libc() {
        Some(p) => bench_file(c, "libc", &p),
        None => eprintln!("SKIPPED: libc.so.6 not found"),
    }
    match rustc_driver() {
        Some(p) => bench_file(c, "rustc_driver", &p),
        None => eprintln!("SKIPPED: librustc_driver-*.so not found"),
    }
}

criterion_group!(benches, symbolize);
criterion_main!(benches);
