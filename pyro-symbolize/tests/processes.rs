//! Symbolization of real processes built by the tests: each program prints the runtime
//! addresses of its own functions (function pointers, `dlsym`, Go's `runtime.FuncForPC`, Rust's
//! `type_name_of_val`) with the names they belong to, then waits on stdin while the test
//! symbolizes those addresses in its pid.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use pyro_symbolize::{Demangle, Frame, Symbolizer, SymbolizerConfig};

const C_PROG: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) int alpha_work(int x) { return x * 3 + 1; }
__attribute__((noinline)) static int beta_static(int x) { return x ^ 0x55; }
extern int lib_func(int);
extern void *lib_static_addr(void);

static void show(const char *name, void *addr) { printf("%s %lx\n", name, (unsigned long)addr); }

int main(int argc, char **argv) {
    show("alpha_work", (void *)&alpha_work);
    show("beta_static", (void *)&beta_static);
    show("main", (void *)&main);
    show("lib_static", lib_static_addr());
#ifdef __PIE__
    show("lib_func", (void *)&lib_func);
#endif
    const char *libc_funcs[] = {"qsort", "fnmatch", "regcomp", "bsearch"};
    for (int i = 0; i < 4; i++) show(libc_funcs[i], dlsym(RTLD_DEFAULT, libc_funcs[i]));
    printf("ready\n");
    fflush(stdout);
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (strncmp(line, "dlopen ", 7) == 0) {
            void *h = dlopen(line + 7, RTLD_NOW);
            show("late_func", h ? dlsym(h, "late_func") : 0);
            printf("ready\n");
            fflush(stdout);
        }
    }
    return alpha_work(beta_static(argc)) + lib_func(1) == 0;
}
"#;

const C_LIB: &str = r#"
__attribute__((noinline)) int lib_func(int x) { return x + 7; }
__attribute__((noinline)) static int lib_static(int x) { return x * 5; }
void *lib_static_addr(void) { return (void *)&lib_static; }
"#;

const C_LATE: &str = "__attribute__((noinline)) int late_func(int x) { return x * 2; }\n";

const CPP_PROG: &str = r#"
#include <cstdio>
#include <cstring>
#include <iostream>
namespace ns {
template <typename T> struct Box {
    __attribute__((noinline)) T get(T x) const { return x + 1; }
};
template <typename T> __attribute__((noinline)) T twice(T x) { return x * 2; }
}
int main() {
    auto member = &ns::Box<int>::get;
    void *addr;
    std::memcpy(&addr, &member, sizeof addr);
    std::printf("box_get %lx\n", (unsigned long)addr);
    std::printf("twice %lx\n", (unsigned long)(void *)&ns::twice<long>);
    std::printf("ready\n");
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {}
    ns::Box<int> b;
    return b.get(ns::twice<long>(1)) == 0;
}
"#;

const RUST_PROG: &str = r#"
use std::io::BufRead;
#[inline(never)]
pub fn rust_alpha(x: u64) -> u64 { x.wrapping_mul(31) }
pub struct Widget<T>(pub T);
impl<T: Copy + Into<u64>> Widget<T> {
    #[inline(never)]
    pub fn spin(&self) -> u64 { self.0.into() + 1 }
}
fn main() {
    let f = rust_alpha as fn(u64) -> u64;
    println!("{} {:x}", std::any::type_name_of_val(&rust_alpha), f as usize);
    let g = Widget::<u32>::spin as fn(&Widget<u32>) -> u64;
    println!("{} {:x}", std::any::type_name_of_val(&Widget::<u32>::spin), g as usize);
    println!("ready");
    for _ in std::io::stdin().lock().lines() {}
    std::hint::black_box(f(3) + g(&Widget(2)));
}
"#;

const GO_PROG: &str = r#"
package main

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
	"runtime"
)

//go:noinline
func goAlpha(x int) int { return x*3 + 1 }

type T struct{ v int }

//go:noinline
func (t *T) Method() int { return t.v + 1 }

func main() {
	for _, f := range []any{goAlpha, (*T).Method, main} {
		pc := reflect.ValueOf(f).Pointer()
		fmt.Printf("%s %x\n", runtime.FuncForPC(pc).Name(), pc)
	}
	fmt.Println("ready")
	s := bufio.NewScanner(os.Stdin)
	for s.Scan() {
	}
	_ = goAlpha(1) + (&T{}).Method()
}
"#;

/// A running test program, killed on drop.
struct Prog {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Prog {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = pyro_testkit::spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()))
            .expect("spawn test program");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `(name, address)` lines until `ready`.
    fn read_addrs(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read program output");
            assert!(n > 0, "program exited before `ready`: {out:?}");
            let line = line.trim_end();
            if line == "ready" {
                return out;
            }
            let (name, addr) = line.rsplit_once(' ').expect("`name addr` line");
            let addr = u64::from_str_radix(addr, 16).expect("hex address");
            assert_ne!(addr, 0, "{name} has no address");
            out.push((name.to_owned(), addr));
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to program");
        stdin.flush().expect("flush");
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run build command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write source");
    path
}

/// Builds the C library, the late-loaded library and the program (PIE or not) in `dir`.
fn build_c(dir: &Path, pie: bool) -> Option<PathBuf> {
    let gcc = pyro_testkit::tool("gcc")?;
    let lib = write(dir, "lib.c", C_LIB);
    run(Command::new(&gcc)
        .args(["-O1", "-g0", "-shared", "-fPIC", "-o"])
        .arg(dir.join("libpyrotest.so"))
        .arg(&lib));
    let late = write(dir, "late.c", C_LATE);
    run(Command::new(&gcc)
        .args(["-O1", "-shared", "-fPIC", "-o"])
        .arg(dir.join("libpyrolate.so"))
        .arg(&late));
    let src = write(dir, "prog.c", C_PROG);
    let exe = dir.join(if pie { "prog_pie" } else { "prog_nopie" });
    run(Command::new(&gcc)
        .args(["-O1", "-g0"])
        .arg(if pie { "-pie" } else { "-no-pie" })
        .arg(if pie { "-fPIE" } else { "-fno-pie" })
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .args(["-lpyrotest", "-ldl"]));
    Some(exe)
}

fn symbolizer(demangle: Demangle) -> Symbolizer {
    Symbolizer::new(SymbolizerConfig {
        demangle,
        ..SymbolizerConfig::default()
    })
}

fn module_of(name: &str, exe: &Path) -> String {
    match name {
        "lib_func" | "lib_static" => "libpyrotest.so".into(),
        "late_func" => "libpyrolate.so".into(),
        "qsort" | "fnmatch" | "regcomp" | "bsearch" => "libc.so.6".into(),
        _ => exe.file_name().unwrap().to_string_lossy().into_owned(),
    }
}

/// Every printed function resolves to its own name, at its entry and inside its body.
fn check_all(sym: &Symbolizer, pid: u32, expected: &[(String, u64)], exe: &Path) {
    for (name, addr) in expected {
        let frames = sym.symbolize_user(pid, &[*addr, addr + 1]);
        assert_eq!(frames.len(), 2);
        for f in &frames {
            assert_eq!(&*f.name, name, "address {addr:#x}: {f:?}");
            assert_eq!(&*f.module, module_of(name, exe), "{f:?}");
            assert!(f.resolved);
        }
    }
}

fn check_c(pie: bool) {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = build_c(dir.path(), pie) else {
        return;
    };
    let mut prog = Prog::spawn(Command::new(&exe));
    let expected = prog.read_addrs();
    assert_eq!(expected.len(), if pie { 9 } else { 8 });
    let sym = symbolizer(Demangle::None);
    check_all(&sym, prog.pid(), &expected, &exe);

    // One call with all addresses gives one frame per address, in order.
    let addrs: Vec<u64> = expected.iter().map(|e| e.1).collect();
    let names: Vec<String> = sym
        .symbolize_user(prog.pid(), &addrs)
        .into_iter()
        .map(|f| f.name.to_string())
        .collect();
    let want: Vec<String> = expected.iter().map(|e| e.0.clone()).collect();
    assert_eq!(names, want);

    // A library loaded after the symbolizer read the maps is found by re-reading them.
    prog.send(&format!(
        "dlopen {}",
        dir.path().join("libpyrolate.so").display()
    ));
    let late = prog.read_addrs();
    assert_eq!(late[0].0, "late_func");
    check_all(&sym, prog.pid(), &late, &exe);
}

#[test]
fn c_pie_executable_and_shared_libraries() {
    check_c(true);
}

#[test]
fn c_non_pie_executable() {
    check_c(false);
}

#[test]
fn deleted_executable_resolves_through_map_files() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = build_c(dir.path(), true) else {
        return;
    };
    let mut prog = Prog::spawn(Command::new(&exe));
    let expected = prog.read_addrs();
    std::fs::remove_file(&exe).unwrap();
    let sym = symbolizer(Demangle::None);
    check_all(&sym, prog.pid(), &expected, &exe);
}

#[test]
fn process_exit_and_pid_reuse_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = build_c(dir.path(), true) else {
        return;
    };
    let mut prog = Prog::spawn(Command::new(&exe));
    let expected = prog.read_addrs();
    let pid = prog.pid();
    let sym = symbolizer(Demangle::None);
    check_all(&sym, pid, &expected, &exe);
    drop(prog);
    sym.process_exited(pid);
    let frames = sym.symbolize_user(pid, &[expected[0].1]);
    assert_eq!(&*frames[0].name, "[unknown]");
    assert!(!frames[0].resolved);
}

#[test]
fn binary_only_inside_a_private_mount_namespace() {
    // Needs root for `unshare -m` and mount (CI runs as root).
    if !pyro_testkit::bpf_available() || pyro_testkit::tool("unshare").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = build_c(dir.path(), true) else {
        return;
    };
    let hidden = dir.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    let inside = hidden.join("nsprog");
    let script = format!(
        "mount -t tmpfs none {h} && cp {exe} {inside} && exec {inside}",
        h = hidden.display(),
        exe = exe.display(),
        inside = inside.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let mut prog = Prog::spawn(cmd);
    let expected = prog.read_addrs();
    // The binary exists only in the process's mount namespace.
    assert!(
        !inside.exists(),
        "{} is visible on the host",
        inside.display()
    );
    let sym = symbolizer(Demangle::None);
    check_all(&sym, prog.pid(), &expected, &inside);
}

#[test]
fn cpp_names_in_every_demangle_mode() {
    let (Some(gxx), Some(cxxfilt)) = (pyro_testkit::tool("g++"), pyro_testkit::tool("c++filt"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "prog.cc", CPP_PROG);
    let exe = dir.path().join("cppprog");
    run(Command::new(gxx).args(["-O1", "-o"]).arg(&exe).arg(&src));
    let mut prog = Prog::spawn(Command::new(&exe));
    let addrs: Vec<u64> = prog.read_addrs().into_iter().map(|e| e.1).collect();
    let names = |mode| -> Vec<String> {
        symbolizer(mode)
            .symbolize_user(prog.pid(), &addrs)
            .into_iter()
            .map(|f| {
                assert!(f.resolved, "{f:?}");
                assert_eq!(&*f.module, "cppprog");
                f.name.to_string()
            })
            .collect()
    };
    let raw = names(Demangle::None);
    assert!(raw.iter().all(|n| n.starts_with("_Z")), "{raw:?}");
    // Full names agree with binutils' demangler.
    let filt = Command::new(cxxfilt).args(&raw).output().unwrap();
    let filt: Vec<String> = String::from_utf8(filt.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(names(Demangle::Full), filt);
    assert_eq!(
        filt,
        ["ns::Box<int>::get(int) const", "long ns::twice<long>(long)"]
    );
    assert_eq!(
        names(Demangle::Templates),
        ["ns::Box<int>::get", "ns::twice<long>"]
    );
    assert_eq!(names(Demangle::Simplified), ["ns::Box::get", "ns::twice"]);
}

fn check_rust(mangling: &str) {
    let Some(rustc) = pyro_testkit::tool("rustc") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "rust_prog.rs", RUST_PROG);
    let exe = dir.path().join("rust_prog");
    run(Command::new(rustc)
        .args(["-O", "--edition", "2021", "-C", "debuginfo=0"])
        // Stable rustc mangles legacy by default and only accepts `v0` explicitly.
        .args((mangling == "v0").then_some("-Csymbol-mangling-version=v0"))
        .arg("-o")
        .arg(&exe)
        .arg(&src));
    let mut prog = Prog::spawn(Command::new(&exe));
    let expected = prog.read_addrs();
    let addrs: Vec<u64> = expected.iter().map(|e| e.1).collect();
    let frames = |mode| -> Vec<Frame> { symbolizer(mode).symbolize_user(prog.pid(), &addrs) };
    let name = |f: &Frame| f.name.to_string();

    let raw = frames(Demangle::None);
    let prefix = if mangling == "v0" { "_R" } else { "_ZN" };
    assert!(raw.iter().all(|f| f.name.starts_with(prefix)), "{raw:?}");
    assert!(raw[0].name.contains("10rust_alpha"), "{raw:?}");

    // The program's own idea of its function's name.
    assert_eq!(expected[0].0, "rust_prog::rust_alpha");
    for mode in [Demangle::Simplified, Demangle::Templates, Demangle::Full] {
        let f = frames(mode);
        assert_eq!(name(&f[0]), expected[0].0, "{mode}");
        assert!(f.iter().all(|f| f.resolved && &*f.module == "rust_prog"));
    }
    // `type_name_of_val` says `rust_prog::Widget<u32>::spin`; the symbol carries the generic
    // argument only in v0 mangling.
    assert_eq!(expected[1].0, "rust_prog::Widget<u32>::spin");
    let spin = |mode| name(&frames(mode)[1]);
    if mangling == "v0" {
        assert_eq!(spin(Demangle::Full), "<rust_prog::Widget<u32>>::spin");
        assert_eq!(spin(Demangle::Templates), "<rust_prog::Widget<u32>>::spin");
        assert_eq!(spin(Demangle::Simplified), "<rust_prog::Widget>::spin");
    } else {
        assert_eq!(spin(Demangle::Full), "rust_prog::Widget<T>::spin");
        assert_eq!(spin(Demangle::Simplified), "rust_prog::Widget::spin");
    }
}

#[test]
fn rust_legacy_mangling() {
    check_rust("legacy");
}

#[test]
fn rust_v0_mangling() {
    check_rust("v0");
}

#[test]
fn go_binary_through_its_symbol_table() {
    let Some(go) = pyro_testkit::tool("go") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "main.go", GO_PROG);
    let exe = dir.path().join("goprog");
    run(Command::new(go)
        .args(["build", "-o"])
        .arg(&exe)
        .arg(&src)
        .current_dir(dir.path())
        .env("GO111MODULE", "off")
        .env(
            "GOCACHE",
            std::env::temp_dir().join("pyro-symbolize-gocache"),
        )
        .env("HOME", dir.path()));
    let mut prog = Prog::spawn(Command::new(&exe));
    let expected = prog.read_addrs();
    assert_eq!(
        expected.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["main.goAlpha", "main.(*T).Method", "main.main"]
    );
    let sym = symbolizer(Demangle::Full);
    check_all(&sym, prog.pid(), &expected, &exe);
}

#[test]
fn own_process_functions() {
    #[inline(never)]
    fn marker_function_for_test(x: u64) -> u64 {
        std::hint::black_box(x) * 3
    }
    let f = marker_function_for_test as fn(u64) -> u64;
    let sym = symbolizer(Demangle::Simplified);
    let frames = sym.symbolize_user(std::process::id(), &[f as usize as u64]);
    assert!(frames[0].resolved, "{frames:?}");
    assert!(
        frames[0].name.ends_with("::marker_function_for_test"),
        "{frames:?}"
    );
}

#[test]
fn tables_are_shared_by_file_and_build_id_and_names_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = build_c(dir.path(), true) else {
        return;
    };
    // A copy is a different file (inode) with the same GNU build id.
    let copy = dir.path().join("prog_copy");
    std::fs::copy(&exe, &copy).unwrap();
    let mut a = Prog::spawn(Command::new(&exe));
    let mut b = Prog::spawn(Command::new(&exe));
    let mut c = Prog::spawn(Command::new(&copy));
    let (ea, eb, ec) = (a.read_addrs(), b.read_addrs(), c.read_addrs());
    let sym = symbolizer(Demangle::Full);
    let first = |p: &Prog, e: &[(String, u64)]| sym.symbolize_user(p.pid(), &[e[0].1]).remove(0);
    let (fa, fb, fc) = (first(&a, &ea), first(&b, &eb), first(&c, &ec));
    assert_eq!(&*fa.name, "alpha_work");
    assert_eq!(&*fc.module, "prog_copy");
    // The same stored name: one table served all three processes.
    assert!(std::sync::Arc::ptr_eq(&fa.name, &fb.name));
    assert!(std::sync::Arc::ptr_eq(&fa.name, &fc.name));
    // Repeated lookups hand out the stored name, not a new string.
    let again = first(&a, &ea);
    assert!(std::sync::Arc::ptr_eq(&fa.name, &again.name));
}

#[test]
fn new_library_found_even_after_many_unmapped_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = build_c(dir.path(), true) else {
        return;
    };
    let mut prog = Prog::spawn(Command::new(&exe));
    prog.read_addrs();
    let sym = symbolizer(Demangle::None);
    // Plausible but unmapped addresses (as broken unwinding produces): re-reads find nothing new
    // and back off.
    for i in 0..50u64 {
        let f = sym.symbolize_user(prog.pid(), &[0x1234_0000_0000 + i * 0x1000]);
        assert_eq!(&*f[0].name, "[unknown]");
    }
    let lib = dir.path().join("libpyrolate.so");
    prog.send(&format!("dlopen {}", lib.display()));
    let late = prog.read_addrs();
    // Backing off delays, never prevents, seeing the new mapping.
    let calls = (1..=300)
        .find(|_| sym.symbolize_user(prog.pid(), &[late[0].1])[0].resolved)
        .expect("late_func never resolved");
    let f = sym.symbolize_user(prog.pid(), &[late[0].1]).remove(0);
    assert_eq!(&*f.name, "late_func");
    eprintln!("resolved after {calls} calls");
}

#[test]
fn stripped_binary_uses_its_build_id_debug_file() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(exe), Some(objcopy)) = (build_c(dir.path(), true), pyro_testkit::tool("objcopy"))
    else {
        return;
    };
    let debug = dir.path().join("prog.debug");
    run(Command::new(&objcopy)
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(&debug));
    run(Command::new(&objcopy).arg("--strip-all").arg(&exe));
    let id = pyro_symbolize::ElfSymbols::load(&exe, Demangle::None)
        .unwrap()
        .build_id()
        .expect("gcc adds a GNU build id")
        .to_vec();
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();

    let mut prog = Prog::spawn(Command::new(&exe));
    let expected = prog.read_addrs();
    let beta = expected.iter().find(|e| e.0 == "beta_static").unwrap().1;
    // Stripped: the static function is not in `.dynsym`, so only the module name is known.
    let f = symbolizer(Demangle::None)
        .symbolize_user(prog.pid(), &[beta])
        .remove(0);
    assert_eq!((&*f.name, f.resolved), ("prog_pie", false));

    // A procfs view of the process whose root holds the debug file where gdb would look.
    let proc = tempfile::tempdir().unwrap();
    let pdir = proc.path().join(prog.pid().to_string());
    let root = pdir.join("root");
    let exe_in_root = root.join(exe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(exe_in_root.parent().unwrap()).unwrap();
    std::fs::hard_link(&exe, &exe_in_root).unwrap();
    let debug_dir = root.join("usr/lib/debug/.build-id").join(&hex[..2]);
    std::fs::create_dir_all(&debug_dir).unwrap();
    std::fs::copy(&debug, debug_dir.join(format!("{}.debug", &hex[2..]))).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", prog.pid())).unwrap();
    std::fs::write(pdir.join("maps"), maps).unwrap();

    let sym = Symbolizer::new(SymbolizerConfig {
        proc_root: proc.path().to_owned(),
        ..SymbolizerConfig::default()
    });
    for name in ["alpha_work", "beta_static", "main"] {
        let addr = expected.iter().find(|e| e.0 == name).unwrap().1;
        let f = sym.symbolize_user(prog.pid(), &[addr, addr + 1]);
        assert!(f.iter().all(|f| &*f.name == name && f.resolved), "{f:?}");
    }
}

const VDSO_PROG: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
int main(void) {
    void *vdso = dlopen("linux-vdso.so.1", RTLD_LAZY | RTLD_NOLOAD);
    const char *names[] = {"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_getcpu"};
    for (int i = 0; vdso && i < 3; i++) {
        void *f = dlsym(vdso, names[i]);
        if (f) printf("%s %lx\n", names[i], (unsigned long)f);
    }
    printf("ready\n");
    fflush(stdout);
    while (getchar() != EOF) {}
    return 0;
}
"#;

#[test]
fn vdso_functions_resolve_from_process_memory() {
    let Some(gcc) = pyro_testkit::tool("gcc") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "vdso.c", VDSO_PROG);
    let exe = dir.path().join("vdsoprog");
    run(Command::new(gcc).arg("-o").arg(&exe).arg(&src).arg("-ldl"));
    let mut prog = Prog::spawn(Command::new(&exe));
    // The dynamic linker's own view of the vDSO's exports is the reference.
    let expected = prog.read_addrs();
    assert!(!expected.is_empty(), "no vDSO symbols found by dlsym");
    let sym = symbolizer(Demangle::None);
    for (name, addr) in &expected {
        for f in sym.symbolize_user(prog.pid(), &[*addr, addr + 1]) {
            // The vDSO exports each function twice (`clock_gettime` weak, `__vdso_clock_gettime`
            // global); among symbols at one address the global one is preferred.
            assert_eq!(&*f.name, name, "{f:?}");
            assert_eq!(&*f.module, "[vdso]");
            assert!(f.resolved);
        }
    }
}
