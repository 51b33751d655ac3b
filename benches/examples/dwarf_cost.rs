//! DWARF lookups (function, file, line and inlined functions) of 20 000 addresses in one ELF
//! file with debug info, cold (load + first pass) and warm (second pass), by pyro or by
//! blazesym 0.2.7 (code info and inlined functions on), printing times, frames found and the
//! process's peak RSS (one side per process, so the peaks are separate):
//!
//!     cargo run --release -p pyro-benches --example dwarf_cost -- pyro /usr/lib/debug/.build-id/93/ac61….debug
//!     cargo run --release -p pyro-benches --example dwarf_cost -- blazesym /usr/lib/debug/.build-id/93/ac61….debug

use std::path::{Path, PathBuf};
use std::time::Instant;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};
use object::{Object, ObjectSymbol, SymbolKind};
use pyro_symbolize::{DebugInfo, Demangle, ElfSymbols};

const ADDRS: usize = 20_000;

/// 20 000 addresses inside sized function symbols (fixed pseudo-random sequence).
fn addresses(path: &Path) -> Vec<u64> {
    let data = std::fs::read(path).expect("read ELF");
    let file = object::File::parse(&*data).expect("parse ELF");
    let funcs: Vec<(u64, u64)> = file
        .symbols()
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

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// (frames, inlined frames) for all addresses.
fn pyro(info: &DebugInfo, syms: &ElfSymbols, addrs: &[u64]) -> (usize, usize) {
    let (mut frames, mut inlined) = (0, 0);
    for &a in addrs {
        let f = info.lookup_or_symbol(a, syms.lookup(a));
        frames += f.len();
        inlined += f.len().saturating_sub(1);
    }
    (frames, inlined)
}

fn blaze(b: &Blaze, src: &Source<'_>, addrs: &[u64]) -> (usize, usize) {
    let (mut frames, mut inlined) = (0, 0);
    for s in b
        .symbolize(src, Input::VirtOffset(addrs))
        .expect("blazesym")
    {
        if let Symbolized::Sym(sym) = s {
            frames += 1 + sym.inlined.len();
            inlined += sym.inlined.len();
        }
    }
    (frames, inlined)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let side = args.next().expect("pyro | blazesym");
    let path = PathBuf::from(args.next().expect("ELF file with DWARF"));
    let addrs = addresses(&path);
    let before = peak_rss_kib();
    let t0 = Instant::now();
    let (cold, warm, found) = match side.as_str() {
        "pyro" => {
            let syms = ElfSymbols::load(&path, Demangle::Full).expect("symbols");
            let info = DebugInfo::load(&path, Demangle::Full, u64::MAX).expect("DWARF");
            let found = pyro(&info, &syms, &addrs);
            let cold = t0.elapsed();
            let t1 = Instant::now();
            pyro(&info, &syms, &addrs);
            (cold, t1.elapsed(), found)
        }
        "blazesym" => {
            let b = Blaze::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .build();
            let src = Source::Elf(Elf::new(&path));
            let found = blaze(&b, &src, &addrs);
            let cold = t0.elapsed();
            let t1 = Instant::now();
            blaze(&b, &src, &addrs);
            (cold, t1.elapsed(), found)
        }
        other => panic!("unknown side {other}"),
    };
    println!(
        "{side}: {} addresses, {} frames ({} inlined); cold {:.1} ms, warm {:.1} ms; peak RSS {} MiB (before {} MiB)",
        addrs.len(),
        found.0,
        found.1,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        peak_rss_kib() / 1024,
        before / 1024
    );
}
