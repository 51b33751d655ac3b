//! Files read on behalf of a container stay inside the container.
//!
//! A process in its own mount namespace, chrooted into a private root (a tmpfs with `/usr`
//! bind-mounted), maps a library through an ABSOLUTE symlink whose target exists both inside
//! the container (the library it really runs, `container_alpha`…) and on the host (a different
//! ELF of the same layout whose functions are `host_only_alpha`…). Its JIT perf map
//! `/tmp/perf-<pid>.map` is an absolute symlink too, to a path holding the container's map
//! inside and a host file outside. The symbolizer must name the container's functions and
//! never a host symbol.
//!
//! How the trap is armed: for a chrooted process `/proc/PID/maps` names files as seen from
//! the mount namespace's root, `<root dir>/<path inside>`; joined to `/proc/PID/root` that path
//! passes the container's symlink `<root dir>` → `/<tmpdir>` (absolute), which a plain `open`
//! resolves against the host's root. The host file sits on a fresh tmpfs as the first file,
//! like the container's library on its own fresh tmpfs, so both have the same inode number and
//! an inode check alone does not notice the substitution.
//!
//! A second test (no root needed: a procfs view built in a temporary directory) plants the
//! build-id debug file of a stripped binary as an absolute symlink to a host debug file with
//! the same build id and host symbol names.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use pyro_core::rootfs::{self, RootDir};
use pyro_symbolize::{JIT_MODULE, Symbolizer, SymbolizerConfig};

/// Same source, same layout, different names (of equal length): `container_` or `host_only_`.
const LIB: &str = r#"
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F(n) CAT(PREFIX, n)
__attribute__((noinline)) int F(alpha)(int x) { return x * 3 + 1; }
__attribute__((noinline)) int F(beta)(int x) { return F(alpha)(x) ^ 0x55; }
"#;

/// Maps the library named by argv[1] (a path through the container's absolute symlink), maps
/// an anonymous executable page, writes its perf map to argv[2] (inside the container) and
/// makes `/tmp/perf-<pid>.map` an absolute symlink to argv[2].
const PROG: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 3; }
    const char *names[] = {"container_alpha", "container_beta"};
    for (int i = 0; i < 2; i++) {
        void *f = dlsym(h, names[i]);
        if (!f) return 4;
        printf("%s %lx\n", names[i], (unsigned long)f);
    }
    void *jit = mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (jit == MAP_FAILED) return 5;
    FILE *map = fopen(argv[2], "w");
    if (!map) { perror("perf map"); return 6; }
    fprintf(map, "%lx 100 container_jit_fn\n", (unsigned long)jit);
    fclose(map);
    char link[64];
    snprintf(link, sizeof link, "/tmp/perf-%d.map", (int)getpid());
    if (symlink(argv[2], link) != 0) { perror("symlink"); return 7; }
    printf("container_jit_fn %lx\n", (unsigned long)jit);
    printf("ready\n");
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
"#;

struct Prog {
    child: Child,
    _stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Prog {
    /// `(name, address)` lines until `ready`.
    fn read_addrs(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read output");
            assert!(n > 0, "container program exited before `ready`: {out:?}");
            let line = line.trim_end();
            if line == "ready" {
                return out;
            }
            let (name, addr) = line.rsplit_once(' ').expect("`name addr` line");
            out.push((name.to_owned(), u64::from_str_radix(addr, 16).expect("hex")));
        }
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unmounts a tmpfs of this thread's private mount namespace.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; detaching a mount has no memory-safety preconditions.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// Moves this test's thread (only it: mount namespaces are per thread) into a private mount
/// namespace and mounts a fresh tmpfs on `dir`, so the "host" side of the test changes no
/// mount anyone else sees.
fn private_tmpfs(dir: &Path) -> Mounted {
    // SAFETY: plain system calls on valid C strings; CLONE_NEWNS affects this thread only.
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNS),
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
        let root = cstr(Path::new("/"));
        assert_eq!(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0,
            "make / private: {}",
            std::io::Error::last_os_error()
        );
        let target = cstr(dir);
        let tmpfs = cstr(Path::new("tmpfs"));
        assert_eq!(
            libc::mount(
                tmpfs.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null()
            ),
            0,
            "mount tmpfs on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Mounted(dir.to_owned())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run build command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn container_symlinks_resolve_inside_the_container() {
    // Root (mount, chroot, map_files) and the tools; under PYRO_REQUIRE_BPF=1 /
    // PYRO_REQUIRE_TOOLS=1 their absence fails the test.
    let root_ok = pyro_testkit::bpf_available();
    let tools = (
        pyro_testkit::tool("unshare"),
        pyro_testkit::tool("chroot"),
        pyro_testkit::tool("cc"),
    );
    let (true, (Some(_), Some(_), Some(cc))) = (root_ok, tools) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().canonicalize().unwrap();
    let ds = d.to_str().unwrap().to_owned();
    let build_lib = |prefix: &str, out: &Path| {
        let src = d.join(format!("{prefix}.c"));
        std::fs::write(&src, LIB).unwrap();
        run(Command::new(&cc)
            .args([
                "-O1",
                "-shared",
                "-fPIC",
                &format!("-DPREFIX={prefix}"),
                "-o",
            ])
            .arg(out)
            .arg(&src));
    };
    let container_lib = d.join("libcontainer.so");
    let host_lib = d.join("libhost.so");
    build_lib("container_", &container_lib);
    build_lib("host_only_", &host_lib);
    std::fs::write(d.join("prog.c"), PROG).unwrap();
    run(Command::new(&cc)
        .args(["-O1", "-o"])
        .arg(d.join("prog"))
        .arg(d.join("prog.c"))
        .arg("-ldl"));

    // The host side: `<d>/H/libfoo.so` is the host ELF, first file of a fresh tmpfs;
    // `<d>/jit.map` a host file in perf-map format naming a host symbol for every address.
    std::fs::create_dir(d.join("H")).unwrap();
    std::fs::create_dir(d.join("R")).unwrap();
    let mounted = private_tmpfs(&d.join("H"));
    std::fs::copy(&host_lib, d.join("H/libfoo.so")).unwrap();
    std::fs::write(
        d.join("jit.map"),
        "1000 7ffffffff000 host_only_jit_secret\n",
    )
    .unwrap();

    // The container: root R (a tmpfs) with /usr bind-mounted; its library at <d>/H/libfoo.so
    // inside R (first file of its own fresh tmpfs); `<d>/R<d>` inside R an absolute symlink
    // to `<d>`. The program loads the library through that symlink.
    let script = format!(
        r#"set -e
R={ds}/R
mount -t tmpfs none "$R"
mkdir -p "$R/usr" "$R/tmp" "$R{ds}/H" "$R{ds}/R$(dirname {ds})"
mount --bind /usr "$R/usr"
ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"; ln -s usr/bin "$R/bin"
mount -t tmpfs none "$R{ds}/H"
cp {ds}/libcontainer.so "$R{ds}/H/libfoo.so"
ln -s {ds} "$R{ds}/R{ds}"
cp {ds}/prog "$R/prog"
exec chroot "$R" /prog {ds}/R{ds}/H/libfoo.so {ds}/jit.map"#
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let mut child = pyro_testkit::spawn(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("spawn the container");
    let mut prog = Prog {
        _stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    let addrs = prog.read_addrs();
    let pid = prog.child.id();

    // The trap is armed: the maps name the library by a path that, opened plainly through
    // /proc/PID/root, leads to the host ELF, with the mapped file's inode number.
    let maps = pyro_core::proc::exec_maps("/proc", pid).unwrap();
    let lib = maps
        .iter()
        .find(|m| m.path.as_ref().is_some_and(|p| p.ends_with("H/libfoo.so")))
        .expect("the library is mapped");
    let maps_path = lib.path.clone().unwrap();
    assert_eq!(maps_path, PathBuf::from(format!("{ds}/R{ds}/H/libfoo.so")));
    let naive =
        PathBuf::from(format!("/proc/{pid}/root")).join(maps_path.strip_prefix("/").unwrap());
    let host_bytes = std::fs::read(&host_lib).unwrap();
    let container_bytes = std::fs::read(&container_lib).unwrap();
    assert_ne!(host_bytes, container_bytes);
    assert_eq!(
        std::fs::read(&naive).unwrap(),
        host_bytes,
        "a plain open through /proc/PID/root leaves the container"
    );
    assert_eq!(
        std::fs::metadata(&naive).unwrap().ino(),
        lib.inode,
        "the host file has the mapped file's inode number"
    );
    let naive_map = format!("/proc/{pid}/root/tmp/perf-{pid}.map");
    assert!(
        std::fs::read_to_string(&naive_map)
            .unwrap()
            .contains("host_only_jit_secret")
    );

    // pyro_core::rootfs reads the container's files: the maps path inside the root, and the
    // mapping itself through map_files.
    let in_root = RootDir::of_process("/proc", pid).unwrap();
    assert_eq!(in_root.read(&maps_path, 1 << 30).unwrap(), container_bytes);
    let mut mapped = Vec::new();
    std::io::Read::read_to_end(
        &mut rootfs::open_mapped("/proc", pid, lib.start, lib.end, 1 << 30).unwrap(),
        &mut mapped,
    )
    .unwrap();
    assert_eq!(mapped, container_bytes);

    // What a user sees: the container's functions, never a host symbol.
    let sym = Symbolizer::new(SymbolizerConfig::default());
    let frames = sym.symbolize_user(pid, &addrs.iter().map(|a| a.1).collect::<Vec<_>>());
    for ((name, addr), frame) in addrs.iter().zip(&frames) {
        assert!(
            !frame.name.contains("host_only"),
            "{addr:#x} named from the host: {frame:?}"
        );
        assert!(frame.resolved, "{name} at {addr:#x}: {frame:?}");
        assert_eq!(&*frame.name, name, "{addr:#x}: {frame:?}");
        if name == "container_jit_fn" {
            assert_eq!(&*frame.module, JIT_MODULE);
        } else {
            assert_eq!(&*frame.module, "libfoo.so");
        }
    }
    drop(prog);
    drop(mounted);
}

/// A program whose functions are `<PREFIX>alpha`/`<PREFIX>beta`; prints `alpha`'s address.
const DEBUG_PROG: &str = r#"
#include <stdio.h>
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F(n) CAT(PREFIX, n)
__attribute__((noinline)) int F(alpha)(int x) { return x * 3 + 1; }
__attribute__((noinline)) int F(beta)(int x) { return F(alpha)(x) ^ 0x55; }
int main(void) {
    printf("alpha %lx\nready\n", (unsigned long)&F(alpha));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {}
    return F(beta)(1) == 0;
}
"#;

#[test]
fn a_debug_file_planted_as_an_absolute_symlink_is_read_inside_the_root() {
    let (Some(cc), Some(objcopy)) = (pyro_testkit::tool("cc"), pyro_testkit::tool("objcopy"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    std::fs::write(d.join("prog.c"), DEBUG_PROG).unwrap();
    // Both builds carry the same GNU build id, so the host's debug file "matches".
    let build_id = "0123456789abcdef0123456789abcdef01234567";
    let build = |prefix: &str, out: &Path| {
        run(Command::new(&cc)
            .args(["-O1", "-g", &format!("-DPREFIX={prefix}")])
            .arg(format!("-Wl,--build-id=0x{build_id}"))
            .arg("-o")
            .arg(out)
            .arg(d.join("prog.c")));
    };
    let exe = d.join("prog");
    build("container_", &exe);
    let container_debug = d.join("container.debug");
    run(Command::new(&objcopy)
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(&container_debug));
    run(Command::new(&objcopy).arg("--strip-all").arg(&exe));
    build("host_only_", &d.join("host"));
    // The host file a container could point at: a debug file with host symbol names.
    let planted = d.join("planted.debug");
    run(Command::new(&objcopy)
        .arg("--only-keep-debug")
        .arg(d.join("host"))
        .arg(&planted));

    let mut child = pyro_testkit::spawn(
        Command::new(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .unwrap();
    let mut prog = Prog {
        _stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    };
    let addrs = prog.read_addrs();
    let pid = prog.child.id();

    // A procfs view of the process whose root holds the binary, and at the build-id path an
    // absolute symlink to `<d>/planted.debug`: the host's file outside the root, the
    // container's own debug file inside it.
    let proc = tempfile::tempdir().unwrap();
    let pdir = proc.path().join(pid.to_string());
    let root = pdir.join("root");
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside(&d)).unwrap();
    std::fs::hard_link(&exe, inside(&exe)).unwrap();
    std::fs::copy(&container_debug, inside(&planted)).unwrap();
    let link = root.join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &build_id[..2],
        &build_id[2..]
    ));
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&planted, &link).unwrap();
    std::fs::copy(format!("/proc/{pid}/maps"), pdir.join("maps")).unwrap();
    // The trap is armed: a plain open of the link reads the host's file.
    assert_eq!(
        std::fs::read(&link).unwrap(),
        std::fs::read(&planted).unwrap()
    );

    let sym = Symbolizer::new(SymbolizerConfig {
        proc_root: proc.path().to_owned(),
        ..SymbolizerConfig::default()
    });
    let frame = sym.symbolize_user(pid, &[addrs[0].1]).remove(0);
    assert!(!frame.name.contains("host_only"), "{frame:?}");
    assert_eq!(
        (&*frame.name, frame.resolved),
        ("container_alpha", true),
        "{frame:?}"
    );
    assert!(
        frame
            .lines
            .iter()
            .all(|l| !l.function.contains("host_only")),
        "{frame:?}"
    );
}
