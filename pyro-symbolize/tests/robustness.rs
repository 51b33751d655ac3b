//! No input panics: random addresses, pids that do not exist, and fake procfs trees whose maps
//! point at truncated, corrupted or non-ELF files.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use pyro_symbolize::{Demangle, ElfSymbols, Symbolizer, SymbolizerConfig};

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

fn random_addrs(rng: &mut Rng, n: usize) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).map(|_| rng.next()).collect();
    v.extend([
        0,
        1,
        u64::MAX,
        u64::MAX - 1,
        0x7fff_ffff_ffff,
        0xffff_ffff_8100_0000,
    ]);
    v
}

#[test]
fn random_addresses_and_missing_pids() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let sym = Symbolizer::new(SymbolizerConfig::default());
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    for pid in [std::process::id(), 0, 1, dead, u32::MAX, 4_194_304] {
        let addrs = random_addrs(&mut rng, 2000);
        let frames = sym.symbolize_user(pid, &addrs);
        assert_eq!(frames.len(), addrs.len());
        assert!(sym.symbolize_user(pid, &[]).is_empty());
    }
    for pid in [0, dead, u32::MAX] {
        let frames = sym.symbolize_user(pid, &[0x401000, 0x7f00_0000_1000]);
        assert!(
            frames
                .iter()
                .all(|f| !f.resolved && &*f.name == "[unknown]")
        );
    }
    let kaddrs = random_addrs(&mut rng, 2000);
    assert_eq!(sym.symbolize_kernel(&kaddrs).len(), kaddrs.len());
}

/// A fake `/proc` with one process whose maps name the given files (under its `root/`).
fn fake_proc(files: &[(&str, &[u8])], extra_maps: &str) -> tempfile::TempDir {
    let proc = tempfile::tempdir().unwrap();
    let root = proc.path().join("4242/root");
    std::fs::create_dir_all(&root).unwrap();
    let mut maps = String::new();
    for (i, (name, bytes)) in files.iter().enumerate() {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let start = 0x1000_0000 * (i as u64 + 1);
        maps.push_str(&format!(
            "{start:x}-{end:x} r-xp 00001000 08:01 {ino} /{name}\n",
            end = start + 0x10_0000
        ));
    }
    maps.push_str(extra_maps);
    std::fs::write(proc.path().join("4242/maps"), maps).unwrap();
    proc
}

fn sample_elf() -> Vec<u8> {
    // The test binary itself: a real ELF with .symtab and .dynsym.
    std::fs::read(std::env::current_exe().unwrap()).unwrap()
}

#[test]
fn broken_files_become_module_names() {
    let elf = sample_elf();
    let mut bad_shoff = elf.clone();
    // e_shoff (offset 0x28 in a 64-bit header) pointing past the end.
    bad_shoff[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
    let files: [(&str, &[u8]); 5] = [
        ("truncated", &elf[..200]),
        ("empty", b""),
        ("text", b"#!/bin/sh\necho not an elf\n"),
        ("badshoff", &bad_shoff),
        ("header_only", &elf[..64]),
    ];
    let proc = fake_proc(
        &files,
        "\
60000000-60001000 r-xp 00000000 00:00 0 \n\
60001000-60002000 r-xp 00000000 00:00 0          [vdso]\n\
60002000-60003000 r-xp 00000000 08:01 99999999   /gone (deleted)\n\
60003000-60004000 r-xp 00000000 08:01 88888888   /missing/file\n\
70000000-6fff0000 r-xp 00000000 08:01 1   /backwards\n\
nonsense\n",
    );
    let sym = Symbolizer::new(SymbolizerConfig {
        proc_root: proc.path().to_owned(),
        demangle: Demangle::Full,
        ..SymbolizerConfig::default()
    });
    let mut addrs: Vec<u64> = (1..=5).map(|i| 0x1000_0000 * i + 0x1234).collect();
    addrs.extend([
        0x6000_0010,
        0x6000_1010,
        0x6000_2010,
        0x6000_3010,
        0x6fff_8000,
        5,
    ]);
    let frames = sym.symbolize_user(4242, &addrs);
    let names: Vec<&str> = frames.iter().map(|f| &*f.name).collect();
    assert_eq!(
        names,
        [
            "truncated",
            "empty",
            "text",
            "badshoff",
            "header_only",
            "[unknown]",
            "[vdso]",
            "gone",
            "file",
            "[unknown]",
            "[unknown]"
        ]
    );
    assert!(frames.iter().all(|f| !f.resolved));
    // Kernel symbols missing from this fake procfs: kernel frames stay unresolved.
    let k = sym.symbolize_kernel(&[0xffff_ffff_8100_0000]);
    assert!(!k[0].resolved);
    assert_eq!(&*k[0].name, "kernel");
}

#[test]
fn corrupted_elf_files_never_panic() {
    let elf = sample_elf();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt");
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let len = elf.len() as u64;
    // Section headers live at the end, ELF/program headers at the start: corrupt both.
    let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().unwrap());
    for round in 0..60 {
        let mut bytes = elf.clone();
        for _ in 0..(1 + round % 16) {
            let pos = match rng.next() % 3 {
                0 => rng.next() % 0x1000,
                1 => shoff + rng.next() % (len - shoff),
                _ => rng.next() % len,
            } as usize;
            bytes[pos] = rng.next() as u8;
        }
        if round % 10 == 0 {
            bytes.truncate((rng.next() % len) as usize);
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(table) = ElfSymbols::load(&path, Demangle::Full) {
            for _ in 0..200 {
                let _ = table.lookup(rng.next() % 0x100_0000);
                let _ = table.lookup_file_offset(rng.next() % len);
            }
        }
    }
}

#[test]
fn elf_symbols_load_errors_are_typed() {
    let err = ElfSymbols::load(Path::new("/nonexistent/file"), Demangle::None).unwrap_err();
    assert!(
        matches!(err, pyro_symbolize::ElfError::Open { .. }),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, b"hello").unwrap();
    let err = ElfSymbols::load(&p, Demangle::None).unwrap_err();
    assert!(
        matches!(err, pyro_symbolize::ElfError::NotElf { .. }),
        "{err}"
    );
}

/// Truncated and corrupted DWARF: typed errors naming the file, or lookups that return what
/// they can; never a panic, whatever bytes were hit.
#[test]
fn corrupt_and_truncated_dwarf_give_errors_not_panics() {
    use object::{Object, ObjectSection};
    use pyro_symbolize::{DebugInfo, DwarfError};
    let Some(gcc) = pyro_testkit::tool("gcc") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("d.c");
    std::fs::write(
        &src,
        "static inline int sq(int x) { return x * x; }\n\
         int f(int n) { int s = 0; for (int i = 0; i < n; i++) s += sq(i); return s; }\n\
         int main(int c, char **v) { (void)v; return f(c); }\n",
    )
    .unwrap();
    let exe = dir.path().join("d");
    let out = std::process::Command::new(gcc)
        .args(["-O2", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&exe).unwrap();
    let (text, sections) = {
        let obj = object::File::parse(&*bytes).unwrap();
        let text = obj.section_by_name(".text").unwrap();
        let sections: Vec<(u64, u64)> =
            [".debug_info", ".debug_line", ".debug_abbrev", ".debug_str"]
                .iter()
                .filter_map(|n| obj.section_by_name(n)?.file_range())
                .collect();
        ((text.address(), text.size()), sections)
    };
    assert_eq!(sections.len(), 4);
    let name = Path::new("damaged.elf");
    let lookups = |info: &DebugInfo| {
        for a in (text.0..text.0 + text.1).step_by(3) {
            let _ = info.lookup(a);
        }
    };
    // Cut anywhere: the section headers (at the end) or the sections themselves are gone.
    let mut errors = 0;
    for cut in [
        64,
        1000,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 100,
    ] {
        match DebugInfo::from_bytes(&bytes[..cut], name, Demangle::Full, u64::MAX) {
            Ok(info) => lookups(&info),
            Err(e) => {
                errors += 1;
                // The message names the file and what was wrong with it.
                let msg = e.to_string();
                assert!(msg.starts_with("damaged.elf: ") && msg.len() > 20, "{msg}");
            }
        }
    }
    assert!(errors >= 3, "{errors}");
    // Random bytes overwritten inside the DWARF sections.
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut kinds = std::collections::BTreeSet::new();
    for round in 0..200 {
        let mut copy = bytes.clone();
        let (off, size) = sections[round % sections.len()];
        for _ in 0..1 + rng.next() % 16 {
            let at = off + rng.next() % size;
            copy[at as usize] = rng.next() as u8;
        }
        match DebugInfo::from_bytes(&copy, name, Demangle::Full, u64::MAX) {
            Ok(info) => {
                lookups(&info);
                kinds.insert("loaded");
            }
            Err(DwarfError::Corrupt { path, .. }) => {
                assert_eq!(path, name);
                kinds.insert("corrupt");
            }
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
    assert!(kinds.contains("loaded"), "{kinds:?}");
}

#[inline(never)]
fn capped_marker() -> u64 {
    std::hint::black_box(7)
}

#[test]
fn a_mapped_file_over_the_elf_size_cap_is_not_read() {
    let addr = capped_marker as fn() -> u64 as usize as u64;
    let exe = std::env::current_exe().unwrap();
    let size = std::fs::metadata(&exe).unwrap().len();
    let module = exe.file_name().unwrap().to_str().unwrap().to_owned();
    let at = |max_elf_file_size| {
        Symbolizer::new(SymbolizerConfig {
            max_elf_file_size,
            ..SymbolizerConfig::default()
        })
        .symbolize_user(std::process::id(), &[addr])
        .remove(0)
    };
    let within = at(size);
    assert!(
        within.resolved && within.name.contains("capped_marker"),
        "{within:?}"
    );
    let over = at(size - 1);
    assert_eq!(
        (&*over.name, over.resolved),
        (module.as_str(), false),
        "{over:?}"
    );
}
