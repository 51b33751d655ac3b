//! Differential test against binutils: for addresses sampled inside functions of libc (with
//! Debian's `libc6-dbg` debug file), a Rust binary and a C++ `-O2 -g` binary with inlined
//! templates (both built here), function, file, line and the whole inline chain must equal what
//! `addr2line -f -i -C -e FILE` prints in at least 99.9 % of cases.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

mod common;

use common::{Level, binutils};
use object::{Object, ObjectSection, ObjectSymbol};
use pyro_symbolize::{DebugInfo, Demangle, ElfSymbols};

/// Addresses sampled in all (the acceptance figure).
const TOTAL: usize = 20_000;
/// Agreement required.
const REQUIRED: f64 = 0.999;

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` addresses inside sized function symbols of `file`'s `.text` (a function picked
/// uniformly, then an offset in it).
fn sample(file: &Path, n: usize, seed: u64) -> Vec<u64> {
    let data = std::fs::read(file).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let text = obj.section_by_name(".text").map(|s| s.index());
    let mut funcs: Vec<(u64, u64)> = obj
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .filter(|s| text.is_none() || s.section_index() == text)
        .map(|s| (s.address(), s.size()))
        .collect();
    funcs.sort_unstable();
    funcs.dedup();
    assert!(
        funcs.len() >= 5,
        "{}: only {} functions",
        file.display(),
        funcs.len()
    );
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let (addr, size) = funcs[(rng.next() % funcs.len() as u64) as usize];
            addr + rng.next() % size
        })
        .collect()
}

fn ours(info: &DebugInfo, syms: &ElfSymbols, addr: u64) -> Vec<Level> {
    let symbol: Option<&Arc<str>> = syms.lookup(addr);
    let frames = info.lookup_or_symbol(addr, symbol);
    if frames.is_empty() {
        // binutils then names the symbol only.
        return symbol
            .map(|s| vec![(s.to_string(), "??".to_owned(), 0)])
            .unwrap_or_default();
    }
    frames
        .into_iter()
        .map(|f| {
            (
                f.function.to_string(),
                f.file.as_deref().unwrap_or("??").to_owned(),
                f.line,
            )
        })
        .collect()
}

/// What binutils' demangler (`c++filt -i`: addr2line -C's flags, no implementation details
/// such as Rust hashes) makes of each of `names`.
fn cxxfilt(names: &[String]) -> Vec<String> {
    let cxxfilt = pyro_testkit::tool("c++filt").expect("c++filt comes with binutils");
    let mut child = Command::new(cxxfilt)
        .arg("-i")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: String = names.iter().map(|n| format!("{n}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), names.len());
    lines
}

/// Result of comparing one file.
#[derive(Default)]
struct Outcome {
    /// Addresses whose levels (names through binutils' demangler) equal binutils'.
    same: usize,
    lookup_diffs: Vec<String>,
    /// Distinct raw names, and those our `Demangle::Full` renders unlike binutils.
    names: usize,
    demangle_diffs: Vec<String>,
}

/// Compares `n` addresses of `file`.
fn compare(addr2line: &Path, file: &Path, n: usize, seed: u64) -> Outcome {
    let addrs = sample(file, n, seed);
    // Raw (linkage) names: the lookup is checked with binutils' own demangler, ours apart.
    let info = DebugInfo::load(file, Demangle::None, u64::MAX).unwrap();
    let syms = ElfSymbols::load(file, Demangle::None).unwrap();
    let expected = binutils(addr2line, file, &addrs, true);
    assert_eq!(expected.len(), addrs.len(), "{}", file.display());
    let units = Units::read(file);
    let raw: Vec<Vec<Level>> = addrs.iter().map(|&a| ours(&info, &syms, a)).collect();
    let mut distinct: Vec<String> = raw.iter().flatten().map(|l| l.0.clone()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct.retain(|n| !n.is_empty());
    let filtered: std::collections::HashMap<&str, String> = distinct
        .iter()
        .map(String::as_str)
        .zip(cxxfilt(&distinct))
        .collect();
    let mut outcome = Outcome {
        names: distinct.len(),
        ..Outcome::default()
    };
    for name in &distinct {
        let ours = pyro_symbolize::demangle(name, Demangle::Full);
        if ours != filtered[name.as_str()] {
            outcome.demangle_diffs.push(format!(
                "{name}\n  c++filt: {}\n  pyro:    {ours}",
                filtered[name.as_str()]
            ));
        }
    }
    for ((addr, want), got) in addrs.iter().zip(&expected).zip(raw) {
        let got: Vec<Level> = got
            .into_iter()
            .map(|(f, file, line)| {
                let f = filtered.get(f.as_str()).cloned().unwrap_or(f);
                (f, file, line)
            })
            .collect();
        if same_levels(want, &got, &units, *addr) {
            outcome.same += 1;
        } else {
            outcome.lookup_diffs.push(format!(
                "{} {addr:#x}:\n  binutils: {want:?}\n  pyro:     {got:?}",
                file.display()
            ));
        }
    }
    outcome
}

/// Whether binutils' `want` and our `got` agree. One known binutils 2.40 defect is allowed for:
/// with DWARF 5, directory entry 0 *is* the compilation directory, and binutils joins the
/// compilation directory to it again (`./nptl/./nptl/x.c` for `./nptl/x.c`; the same defect
/// was fixed in libdwarf, davea42/libdwarf-code#181, and in gimli's addr2line, #238).
///
/// A second binutils 2.40 defect: with DWARF 5, where a unit's file entry 1 differs from entry
/// 0 (the primary source file; glibc's `#include "strfrom-skeleton.c"` files, inlined C++
/// headers), it reports entry 0 for index 1: `./stdlib/strfromf128.c:73` where `readelf
/// --debug-dump=decodedline` (binutils too) shows `strfrom-skeleton.c:73`, and
/// `inline.cpp:229` for a 50-line `inline.cpp`. Allowed only when binutils' file is entry 0 and
/// ours is entry 1 of the unit holding the address (read here with gimli directly).
///
/// A third: where the line table has no row, binutils prints the unit's name (for Rust a
/// codegen unit such as `miniz_oxide.b662226d77c6ee8e-cgu.0`, no file) with line 0; we print
/// no file. Both say "line unknown"; allowed only with line 0 on both sides and binutils' name
/// being the unit's name.
fn same_levels(want: &[Level], got: &[Level], units: &Units, addr: u64) -> bool {
    want.len() == got.len()
        && want.iter().zip(got).all(|(w, g)| {
            w.0 == g.0
                && w.2 == g.2
                && (w.1 == g.1
                    || comp_dir_doubled(&w.1, &g.1)
                    || units.file_index_quirk(addr, &w.1, &g.1)
                    || (w.2 == 0 && g.1 == "??" && units.unit_name_is(addr, &w.1)))
        })
}

/// Per unit: address ranges, name, and base names of line-table file entries 0 and 1.
/// A unit's address ranges, name, and line-table file entries 0 and 1 (`directory/name`).
type Unit = (Vec<(u64, u64)>, String, String, String);

struct Units {
    units: Vec<Unit>,
    /// Names of `STT_FILE` symbols.
    file_symbols: std::collections::HashSet<String>,
}

impl Units {
    fn read(file: &Path) -> Self {
        let data = std::fs::read(file).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        let sections: std::collections::HashMap<gimli::SectionId, Vec<u8>> = [
            gimli::SectionId::DebugAbbrev,
            gimli::SectionId::DebugInfo,
            gimli::SectionId::DebugLine,
            gimli::SectionId::DebugLineStr,
            gimli::SectionId::DebugStr,
            gimli::SectionId::DebugRanges,
            gimli::SectionId::DebugRngLists,
            gimli::SectionId::DebugAddr,
            gimli::SectionId::DebugStrOffsets,
        ]
        .into_iter()
        .filter_map(|id| {
            let s = obj.section_by_name(id.name())?;
            Some((id, s.uncompressed_data().ok()?.into_owned()))
        })
        .collect();
        let dwarf = gimli::Dwarf::load(|id| -> Result<_, gimli::Error> {
            Ok(gimli::EndianSlice::new(
                sections.get(&id).map_or(&[][..], |v| &v[..]),
                gimli::LittleEndian,
            ))
        })
        .unwrap();
        let string = |v: gimli::AttributeValue<_>, unit: &gimli::Unit<_>| -> String {
            dwarf
                .attr_string(unit, v)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        // `directory/name` of a file entry, unjoined to the compilation directory.
        let entry = |h: &gimli::LineProgramHeader<_>, i: u64, unit: &gimli::Unit<_>| -> String {
            let Some(f) = h.file(i) else {
                return String::new();
            };
            let name = string(f.path_name(), unit);
            match f.directory(h).map(|d| string(d, unit)) {
                Some(d) if !d.is_empty() => format!("{d}/{name}"),
                _ => name,
            }
        };
        let mut out = Vec::new();
        let mut headers = dwarf.units();
        while let Ok(Some(header)) = headers.next() {
            let Ok(unit) = dwarf.unit(header) else {
                continue;
            };
            let mut ranges = Vec::new();
            if let Ok(mut r) = dwarf.unit_ranges(&unit) {
                while let Ok(Some(r)) = r.next() {
                    ranges.push((r.begin, r.end));
                }
            }
            let name = unit
                .name
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (f0, f1) = match &unit.line_program {
                Some(lp) => {
                    let h = lp.header();
                    (entry(h, 0, &unit), entry(h, 1, &unit))
                }
                None => Default::default(),
            };
            out.push((ranges, name, f0, f1));
        }
        let file_symbols = obj
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::File)
            .filter_map(|s| s.name().ok().map(str::to_owned))
            .collect();
        Self {
            units: out,
            file_symbols,
        }
    }

    fn unit(&self, addr: u64) -> Option<&Unit> {
        self.units
            .iter()
            .find(|u| u.0.iter().any(|&(b, e)| b <= addr && addr < e))
    }

    fn file_index_quirk(&self, addr: u64, binutils: &str, ours: &str) -> bool {
        self.unit(addr).is_some_and(|(_, _, f0, f1)| {
            !f0.is_empty()
                && !f1.is_empty()
                && f0 != f1
                && binutils.ends_with(f0.as_str())
                && ours.ends_with(f1.as_str())
        })
    }

    fn unit_name_is(&self, addr: u64, name: &str) -> bool {
        // Rust units are named `src/lib.rs/@/crate.hash-cgu.0`; binutils prints the part after
        // `/@/`; units without a name print as "".
        name.is_empty()
            || self.unit(addr).is_some_and(|u| u.1 == name)
            // Without DWARF for the address binutils falls back to the ELF `STT_FILE` symbol
            // before the function (for Rust an object name such as `miniz_oxide.…-cgu.0`).
            || self.file_symbols.contains(name)
    }
}

fn comp_dir_doubled(binutils: &str, ours: &str) -> bool {
    binutils.len() > ours.len() + 1
        && binutils.ends_with(ours)
        && binutils.as_bytes()[binutils.len() - ours.len() - 1] == b'/'
        && ours.starts_with(&format!(
            "{}/",
            &binutils[..binutils.len() - ours.len() - 1]
        ))
}

fn build_cxx(dir: &Path) -> Option<PathBuf> {
    let gxx = pyro_testkit::tool("g++")?;
    let src = dir.join("inline.cpp");
    std::fs::write(&src, CXX_SOURCE).unwrap();
    let out = dir.join("inline-cxx");
    let status = Command::new(gxx)
        .args(["-O2", "-g", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    Some(out)
}

fn build_rust(dir: &Path) -> PathBuf {
    let src = dir.join("inline.rs");
    std::fs::write(&src, RUST_SOURCE).unwrap();
    let out = dir.join("inline-rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "debuginfo=2",
            "--edition",
            "2021",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// libc's separate debug file, found through its build id.
fn libc_debug_file() -> Option<PathBuf> {
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let id = ElfSymbols::load(libc, Demangle::None)
        .ok()?
        .build_id()?
        .to_vec();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let path = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("PYRO_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "libc6-dbg is not installed ({} missing) and PYRO_REQUIRE_TOOLS=1",
        path.display()
    );
    eprintln!("SKIPPED: libc6-dbg is not installed");
    None
}

#[test]
fn lines_and_inline_chains_equal_binutils_addr2line() {
    let Some(addr2line) = pyro_testkit::tool("addr2line") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(libc) = libc_debug_file() else {
        return;
    };
    let Some(cxx) = build_cxx(dir.path()) else {
        return;
    };
    let rust = build_rust(dir.path());
    let files = [libc, cxx, rust];
    let per = TOTAL / files.len();
    let mut same = 0;
    let mut total = 0;
    let mut diffs = Vec::new();
    let (mut names, mut demangle_diffs) = (0, Vec::new());
    for (i, file) in files.iter().enumerate() {
        let n = if i == 0 {
            TOTAL - per * (files.len() - 1)
        } else {
            per
        };
        let o = compare(&addr2line, file, n, 0x9e37_79b9_7f4a_7c15 + i as u64);
        eprintln!(
            "{}: {}/{n} lookups equal; {} of {} names demangled unlike c++filt",
            file.display(),
            o.same,
            o.demangle_diffs.len(),
            o.names
        );
        same += o.same;
        total += n;
        names += o.names;
        diffs.extend(o.lookup_diffs);
        demangle_diffs.extend(o.demangle_diffs);
    }
    for d in &diffs {
        eprintln!("{d}");
    }
    // Our demangler (cpp_demangle 0.5, rustc-demangle) against binutils': measured and
    // listed, not part of the lookup figure (see README, symbolization limitations).
    for d in &demangle_diffs {
        eprintln!("demangling differs: {d}");
    }
    let rate = same as f64 / total as f64;
    eprintln!("lookup agreement: {same}/{total} = {:.3} %", rate * 100.0);
    eprintln!(
        "demangling agreement: {}/{names} distinct names = {:.2} %",
        names - demangle_diffs.len(),
        (names - demangle_diffs.len()) as f64 * 100.0 / names.max(1) as f64
    );
    assert_eq!(total, TOTAL);
    assert!(
        rate >= REQUIRED,
        "{} differences (listed above)",
        diffs.len()
    );
}

const CXX_SOURCE: &str = r#"
#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <string>
#include <vector>

template <typename T> struct Acc {
    T total{};
    void add(const T& v) { total += v * v + (v >> 1); }
};

template <typename T, typename F> T fold(const std::vector<T>& v, F f) {
    T acc{};
    for (const auto& x : v) acc = f(acc, x);
    return acc;
}

template <typename K, typename V> V sum_values(const std::map<K, V>& m) {
    V s{};
    for (const auto& kv : m) s += kv.second;
    return s;
}

int main(int argc, char** argv) {
    std::vector<int> v;
    for (int i = 0; i < 100000 * argc; i++) v.push_back((i * 7919) % 1000);
    std::sort(v.begin(), v.end());
    std::map<std::string, long> m;
    for (int x : v) m[std::to_string(x)] += x;
    Acc<long> a;
    for (const auto& kv : m) a.add(kv.second);
    long s = fold(v, [](long acc, int b) { return acc + b; });
    std::string joined = std::accumulate(argv, argv + argc, std::string(),
        [](std::string acc, const char* p) { return acc + p; });
    std::printf("%ld %ld %ld %zu %s\n", a.total, s, sum_values(m), m.size(), joined.c_str());
    return 0;
}
"#;

const RUST_SOURCE: &str = r#"
use std::collections::{BTreeMap, HashMap};

#[inline]
fn score(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9).rotate_left(7) ^ (x >> 3)
}

fn histogram(words: &[String]) -> BTreeMap<usize, usize> {
    let mut h = BTreeMap::new();
    for w in words {
        *h.entry(w.len()).or_insert(0) += 1;
    }
    h
}

fn main() {
    let n: u64 = std::env::args().count() as u64 * 100_000;
    let total: u64 = (0..n).map(score).filter(|v| v % 3 != 0).sum();
    let words: Vec<String> = (0..n / 10).map(|i| format!("w{}", score(i) % 997)).collect();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for w in &words {
        *counts.entry(w.as_str()).or_default() += 1;
    }
    let mut top: Vec<_> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!("{total} {:?} {:?}", top.first(), histogram(&words).len());
}
"#;
