//! File, line and inline frames of live processes ([`Frame::lines`]), checked against binutils'
//! `addr2line -f -i` on the file holding the DWARF: a stripped binary whose debug file is
//! installed by build id, and libc with Debian's `libc6-dbg`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

use common::Level;
use pyro_symbolize::{Demangle, ElfSymbols, Frame, Symbolizer, SymbolizerConfig};

const PROG: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
static volatile unsigned long sink;
static inline __attribute__((always_inline)) unsigned long leaf(unsigned long x) {
    return x * 2654435761u ^ (x >> 7);
}
static inline __attribute__((always_inline)) unsigned long middle(unsigned long x) {
    return leaf(x + 1) + leaf(x + 3);
}
__attribute__((noinline)) unsigned long outer(unsigned long n) {
    unsigned long s = 0;
    for (unsigned long i = 0; i < n; i++) s += middle(i);
    return s;
}
int main(void) {
    printf("outer %lx\n", (unsigned long)&outer);
    printf("qsort_r %lx\n", (unsigned long)&qsort_r);
    printf("ready\n");
    fflush(stdout);
    while (getchar() != EOF) sink += outer(10);
    return 0;
}
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run build command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn base(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

fn ours(frame: &Frame) -> Vec<Level> {
    frame
        .lines
        .iter()
        .map(|l| {
            (
                l.function.to_string(),
                base(l.file.as_deref().unwrap_or("??")),
                l.line,
            )
        })
        .collect()
}

/// binutils' levels with file base names, for `addrs`.
fn binutils(addr2line: &Path, file: &Path, addrs: &[u64]) -> Vec<Vec<Level>> {
    common::binutils(addr2line, file, addrs, false)
        .into_iter()
        .map(|levels| {
            levels
                .into_iter()
                .map(|(f, p, l)| (f, base(&p), l))
                .collect()
        })
        .collect()
}

/// Size of function symbol `name` in `file`'s symbol table.
fn size_of(file: &Path, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(file).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    obj.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.size())
        .unwrap_or_else(|| panic!("{name} not in {}", file.display()))
}

fn build_id_path(root: &Path, file: &Path) -> PathBuf {
    let id = ElfSymbols::load(file, Demangle::None)
        .unwrap()
        .build_id()
        .expect("GNU build id")
        .to_vec();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    root.join("usr/lib/debug/.build-id")
        .join(&hex[..2])
        .join(format!("{}.debug", &hex[2..]))
}

struct Prog(std::process::Child, Vec<(String, u64)>);

impl Prog {
    fn spawn(exe: &Path) -> Self {
        let mut child = pyro_testkit::spawn(
            Command::new(exe)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )
        .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addrs = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "program exited early"
            );
            let line = line.trim_end();
            if line == "ready" {
                break;
            }
            let (name, addr) = line.split_once(' ').unwrap();
            addrs.push((name.to_owned(), u64::from_str_radix(addr, 16).unwrap()));
        }
        Self(child, addrs)
    }

    fn addr(&self, name: &str) -> u64 {
        self.1.iter().find(|a| a.0 == name).unwrap().1
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A procfs view of process `pid` (its real maps) whose root holds `exe` and, at `debug_at`
/// (relative to the root), `debug`.
fn fake_procfs(pid: u32, exe: &Path, debug: &Path, debug_at: &Path) -> tempfile::TempDir {
    let proc = tempfile::tempdir().unwrap();
    let pdir = proc.path().join(pid.to_string());
    let root = pdir.join("root");
    let exe_in_root = root.join(exe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(exe_in_root.parent().unwrap()).unwrap();
    std::fs::hard_link(exe, &exe_in_root).unwrap();
    let installed = root.join(debug_at);
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(debug, &installed).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    std::fs::write(pdir.join("maps"), maps).unwrap();
    proc
}

/// Builds `PROG` with `-O2 -g` in `dir`, splits its debug info into `<debug_dir>/lines.debug`
/// and strips it (`extra` are more `objcopy` arguments for the strip step).
fn build_stripped(dir: &Path, debug_dir: &Path, extra: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let gcc = pyro_testkit::tool("gcc")?;
    let objcopy = pyro_testkit::tool("objcopy")?;
    let src = dir.join("lines.c");
    std::fs::write(&src, PROG).unwrap();
    let exe = dir.join("lines");
    run(Command::new(&gcc)
        .args(["-O2", "-g", "-o"])
        .arg(&exe)
        .arg(&src));
    let debug = debug_dir.join("lines.debug");
    run(Command::new(&objcopy)
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(&debug));
    run(Command::new(&objcopy)
        .arg("--strip-all")
        .args(
            extra
                .iter()
                .map(|a| a.replace("{debug}", &debug.display().to_string())),
        )
        .arg(&exe));
    Some((exe, debug))
}

#[test]
fn stripped_binary_gets_names_and_lines_through_its_debuglink_with_crc_checked() {
    let Some(addr2line) = pyro_testkit::tool("addr2line") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let Some((exe, debug)) = build_stripped(
        dir.path(),
        elsewhere.path(),
        &["--add-gnu-debuglink={debug}"],
    ) else {
        return;
    };
    let prog = Prog::spawn(&exe);
    let pid = prog.0.id();
    let start = prog.addr("outer");
    let exe_dir = exe.parent().unwrap().strip_prefix("/").unwrap();
    // `<dir>/.debug/lines.debug` inside the process's root (not on the host).
    let proc = fake_procfs(pid, &exe, &debug, &exe_dir.join(".debug/lines.debug"));
    let sym = Symbolizer::new(SymbolizerConfig {
        proc_root: proc.path().to_owned(),
        ..SymbolizerConfig::default()
    });
    let addrs: Vec<u64> = (start..start + size_of(&debug, "outer")).collect();
    let frames = sym.symbolize_user(pid, &addrs);
    let vaddrs: Vec<u64> = frames.iter().map(|f| f.address).collect();
    let expected = binutils(&addr2line, &debug, &vaddrs);
    for (f, want) in frames.iter().zip(&expected) {
        assert_eq!(&*f.name, "outer", "{f:?}");
        assert_eq!(&ours(f), want, "{:#x}", f.address);
    }
    assert_eq!(sym.debuglink_crc_mismatches(), 0);

    // The same name under `/usr/lib/debug/<dir>/`, but different contents: refused, counted.
    let mut other = std::fs::read(&debug).unwrap();
    other.push(0);
    let corrupt = elsewhere.path().join("other.debug");
    std::fs::write(&corrupt, other).unwrap();
    let proc = fake_procfs(
        pid,
        &exe,
        &corrupt,
        &Path::new("usr/lib/debug").join(exe_dir).join("lines.debug"),
    );
    let sym = Symbolizer::new(SymbolizerConfig {
        proc_root: proc.path().to_owned(),
        ..SymbolizerConfig::default()
    });
    let f = sym.symbolize_user(pid, &[start]).remove(0);
    assert_eq!((&*f.name, f.resolved), ("lines", false), "{f:?}");
    assert!(f.lines.is_empty());
    assert_eq!(sym.debuglink_crc_mismatches(), 1);
}

#[test]
fn stripped_binary_with_minidebuginfo_gets_its_function_names() {
    let (Some(objcopy), Some(xz)) = (pyro_testkit::tool("objcopy"), pyro_testkit::tool("xz"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some((exe, debug)) = build_stripped(dir.path(), dir.path(), &[]) else {
        return;
    };
    // What Fedora ships: the symbol table (no DWARF) as an xz-compressed ELF in the binary.
    let mini = dir.path().join("mini");
    run(Command::new(&objcopy)
        .arg("--strip-debug")
        .arg(&debug)
        .arg(&mini));
    run(Command::new(&xz).arg("-k").arg(&mini));
    let with_mini = dir.path().join("lines-mini");
    run(Command::new(&objcopy)
        .arg(format!(
            "--add-section=.gnu_debugdata={}.xz",
            mini.display()
        ))
        .arg(&exe)
        .arg(&with_mini));
    let garbage = dir.path().join("garbage.xz");
    std::fs::write(&garbage, b"\xfd7zXZ\0 this is not xz at all").unwrap();
    let with_garbage = dir.path().join("lines-garbage");
    run(Command::new(&objcopy)
        .arg(format!(
            "--add-section=.gnu_debugdata={}",
            garbage.display()
        ))
        .arg(&exe)
        .arg(&with_garbage));

    let sym = Symbolizer::new(SymbolizerConfig::default());
    let prog = Prog::spawn(&with_mini);
    let start = prog.addr("outer");
    let frames = sym.symbolize_user(prog.0.id(), &[start, start + 1]);
    assert!(
        frames.iter().all(|f| &*f.name == "outer" && f.resolved),
        "{frames:?}"
    );
    assert_eq!(sym.minidebuginfo_errors(), 0);

    // (A new symbolizer: the binaries share a build id, so a cached table would be reused.)
    let sym = Symbolizer::new(SymbolizerConfig::default());
    let prog = Prog::spawn(&with_garbage);
    let start = prog.addr("outer");
    let f = sym.symbolize_user(prog.0.id(), &[start]).remove(0);
    assert_eq!((&*f.name, f.resolved), ("lines-garbage", false), "{f:?}");
    assert_eq!(sym.minidebuginfo_errors(), 1);
}

#[test]
fn stripped_binary_gets_lines_and_inline_frames_from_its_build_id_debug_file() {
    let Some(addr2line) = pyro_testkit::tool("addr2line") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some((exe, debug)) = build_stripped(dir.path(), dir.path(), &[]) else {
        return;
    };
    let prog = Prog::spawn(&exe);
    let pid = prog.0.id();
    // The debug file where gdb looks for it by build id, inside the process's root.
    let at = build_id_path(Path::new(""), &exe);
    let proc = fake_procfs(pid, &exe, &debug, &at);
    let sym = Symbolizer::new(SymbolizerConfig {
        proc_root: proc.path().to_owned(),
        ..SymbolizerConfig::default()
    });
    // Every byte of `outer`: the inlined leaf/middle show up as frames.
    let start = prog.addr("outer");
    let addrs: Vec<u64> = (start..start + size_of(&debug, "outer")).collect();
    let frames = sym.symbolize_user(pid, &addrs);
    let mut inlined = 0;
    let vaddrs: Vec<u64> = frames.iter().map(|f| f.address).collect();
    let expected = binutils(&addr2line, &debug, &vaddrs);
    for (f, want) in frames.iter().zip(&expected) {
        assert_eq!(&*f.name, "outer", "{f:?}");
        let info = f.file.as_ref().expect("file info");
        assert!(info.has_debug_info && !info.build_id.is_empty(), "{info:?}");
        assert_eq!(&ours(f), want, "{:#x}", f.address);
        assert_eq!(f.lines.last().unwrap().function.as_ref(), "outer");
        assert!(f.lines.iter().all(|l| l.line > 0));
        inlined += usize::from(f.lines.len() == 3);
    }
    assert!(inlined > 0, "no address shows leaf <- middle <- outer");
    assert!(frames[0].lines.last().unwrap().start_line > 0);

    // Switched off: names only.
    let off = Symbolizer::new(SymbolizerConfig {
        proc_root: proc.path().to_owned(),
        debug_info: false,
        ..SymbolizerConfig::default()
    });
    let f = off.symbolize_user(pid, &[start]).remove(0);
    assert_eq!(&*f.name, "outer");
    assert!(f.lines.is_empty() && !f.file.unwrap().has_debug_info);
}

#[test]
fn libc_lines_from_libc6_dbg_equal_binutils() {
    let (Some(gcc), Some(addr2line)) = (pyro_testkit::tool("gcc"), pyro_testkit::tool("addr2line"))
    else {
        return;
    };
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let debug = build_id_path(Path::new("/"), libc);
    if !debug.is_file() {
        assert!(
            std::env::var("PYRO_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "libc6-dbg is not installed and PYRO_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED: libc6-dbg is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lines.c");
    std::fs::write(&src, PROG).unwrap();
    let exe = dir.path().join("lines");
    run(Command::new(&gcc).args(["-O2", "-o"]).arg(&exe).arg(&src));
    let prog = Prog::spawn(&exe);
    let sym = Symbolizer::new(SymbolizerConfig::default());
    let qsort = prog.addr("qsort_r");
    let addrs: Vec<u64> = (qsort..qsort + size_of(&debug, "qsort_r").min(256)).collect();
    let frames = sym.symbolize_user(prog.0.id(), &addrs);
    let vaddrs: Vec<u64> = frames.iter().map(|f| f.address).collect();
    let expected = binutils(&addr2line, &debug, &vaddrs);
    for (f, want) in frames.iter().zip(&expected) {
        assert!(f.resolved && &*f.module == "libc.so.6", "{f:?}");
        assert!(!f.lines.is_empty(), "{f:?}");
        assert_eq!(&ours(f), want, "{:#x}", f.address);
    }
    assert!(
        sym.debug_info_bytes() > 1 << 20,
        "{}",
        sym.debug_info_bytes()
    );
    assert_eq!(sym.debug_info_errors(), 0);
}
