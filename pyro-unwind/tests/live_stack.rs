//! The host twin of the BPF frame step unwinds a real stack: a C program built here with
//! `gcc -O2 -fomit-frame-pointer` stops itself (SIGSTOP) inside a `qsort` comparator, so its
//! stack runs through libc's `raise`/`pthread_kill`, our leaf, the comparator, libc's `qsort`
//! internals, `main`, `__libc_start_call_main` and `_start`. gdb (its own DWARF unwinder) gives
//! the registers, a copy of the stack and the reference backtrace; our tables and
//! `pyro_ebpf_common::unwind::step` must give the same frames, pc for pc, to the end.

use std::collections::HashMap;
use std::process::Command;
use std::rc::Rc;

use object::Object;
use object::read::elf::ProgramHeader;
use pyro_ebpf_common::unwind::{Memory, Regs, Row, RowLookup, Step, step};
use pyro_unwind::Table;

const PROGRAM: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
static volatile int stopped;
__attribute__((noinline)) int leaf(int a, int b) {
    if (!stopped) { stopped = 1; raise(SIGSTOP); }
    return a - b;
}
__attribute__((noinline)) int cmp(const void *a, const void *b) {
    int r = leaf(*(const int *)a, *(const int *)b);
    return r < 0 ? -1 : r > 0;
}
__attribute__((noinline)) void run(int *v, int n) { qsort(v, n, sizeof *v, cmp); v[0] += 1; }
int main(void) {
    int v[64];
    for (int i = 0; i < 64; i++) v[i] = (i * 7919) % 64;
    run(v, 64);
    printf("%d\n", v[0]);
    return 0;
}
"#;

const GDB_SCRIPT: &str = r#"
import gdb, os
f = gdb.newest_frame()
rip, rsp, rbp = (int(f.read_register(r)) & 0xffffffffffffffff for r in ("rip", "rsp", "rbp"))
print("REGS %x %x %x" % (rip, rsp, rbp))
end = int(os.environ["PYRO_STACK_END"], 16)
with open(os.environ["PYRO_STACK_DUMP"], "wb") as out:
    out.write(bytes(gdb.selected_inferior().read_memory(rsp, end - rsp)))
while f is not None:
    # Frames gdb rebuilds from DWARF call-site and inline information are not on the stack:
    # no stack unwinder (perf's, BPF's) can see them.
    if f.type() not in (gdb.TAILCALL_FRAME, gdb.INLINE_FRAME):
        print("FRAME %x %s" % (f.pc(), f.name()))
    else:
        print("SYNTHETIC %x %s" % (f.pc(), f.name()))
    f = f.older()
"#;

/// Executable file mappings of the process: `(begin, end, bias, table)`.
struct Process(Vec<(u64, u64, u64, Rc<Table>)>);

impl RowLookup for Process {
    fn lookup(&self, pc: u64) -> Option<Row> {
        let (_, _, bias, table) = self.0.iter().find(|m| pc >= m.0 && pc < m.1)?;
        table.lookup(pc - bias)
    }
}

/// A copy of the stack from `base`.
struct Stack {
    base: u64,
    bytes: Vec<u8>,
}

impl Memory for Stack {
    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        Some(u64::from_le_bytes(
            self.bytes.get(at..at + 8)?.try_into().ok()?,
        ))
    }
}

/// Load bias of a mapping at `begin` of file offset `offset`: runtime address - ELF vaddr.
fn bias(data: &[u8], begin: u64, offset: u64) -> u64 {
    let elf = object::read::elf::ElfFile64::<object::LittleEndian>::parse(data).expect("ELF");
    let e = elf.endian();
    let ph = elf
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(e) == object::elf::PT_LOAD)
        .find(|p| offset >= p.p_offset(e) & !0xfff && offset < p.p_offset(e) + p.p_filesz(e))
        .expect("a PT_LOAD holds the mapping");
    begin - offset - (ph.p_vaddr(e) - ph.p_offset(e))
}

/// A program that stops itself in a signal handler (SIGUSR1 raised from `busy`): the stack runs
/// through the handler, glibc's `__restore_rt` signal trampoline (a SIGNAL row: registers from
/// the `ucontext`, next pc exact) and the interrupted `raise` back to `_start`.
const SIGNAL_PROGRAM: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <string.h>
static volatile int stopped;
__attribute__((noinline)) void handler(int sig) {
    (void)sig;
    if (!stopped) { stopped = 1; raise(SIGSTOP); stopped = 2; } /* no tail call */
}
__attribute__((noinline)) long busy(long n) {
    long s = 0;
    for (long i = 0; i < n; i++) { s += i * i; if (i == n / 2) raise(SIGUSR1); }
    return s;
}
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigaction(SIGUSR1, &sa, 0);
    printf("%ld\n", busy(1000000));
    return 0;
}
"#;

#[test]
fn host_twin_unwinds_a_stopped_process_as_gdb_does() {
    let frames = unwind_like_gdb("qsort", PROGRAM);
    for want in ["leaf", "cmp", "msort_with_tmp", "main", "_start"] {
        assert!(frames.iter().any(|f| f == want), "{want} in {frames:?}");
    }
}

#[test]
fn host_twin_unwinds_through_a_signal_frame_as_gdb_does() {
    let frames = unwind_like_gdb("signal", SIGNAL_PROGRAM);
    let at = |name: &str| frames.iter().position(|f| f == name);
    let (handler, busy) = (at("handler").expect("handler"), at("busy").expect("busy"));
    assert!(
        handler < busy,
        "the handler is called from within busy: {frames:?}"
    );
    assert!(
        frames[handler..busy]
            .iter()
            .any(|f| f.contains("restore_rt")),
        "{frames:?}"
    );
    assert_eq!(frames.last().map(String::as_str), Some("_start"));
}

/// Builds `source`, runs it until it stops itself, and checks that our tables and frame step
/// give gdb's stack frames pc for pc; returns the frames' names (gdb's).
fn unwind_like_gdb(name: &str, source: &str) -> Vec<String> {
    let (Some(gcc), Some(gdb)) = (pyro_testkit::tool("gcc"), pyro_testkit::tool("gdb")) else {
        return Vec::new();
    };
    let dir = std::env::temp_dir().join(format!("pyro-unwind-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, exe, script, dump) = (
        dir.join("p.c"),
        dir.join("p"),
        dir.join("bt.py"),
        dir.join("stack.bin"),
    );
    std::fs::write(&src, source).unwrap();
    std::fs::write(&script, GDB_SCRIPT).unwrap();
    let ok = Command::new(gcc)
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(
        object::File::parse(&*std::fs::read(&exe).unwrap())
            .unwrap()
            .build_id()
            .is_ok()
    );

    let mut child =
        pyro_testkit::spawn(Command::new(&exe).stdout(std::process::Stdio::null())).expect("spawn");
    let pid = child.id();
    let stat = format!("/proc/{pid}/stat");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&stat).unwrap().contains(") T ") {
        assert!(
            std::time::Instant::now() < deadline,
            "the program did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // Tables for every executable file mapping, one per file.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut tables: HashMap<String, (Rc<Table>, Vec<u8>)> = HashMap::new();
    let mut process = Process(Vec::new());
    let mut stack_end = 0;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (range, perms, offset) = (f[0], f[1], u64::from_str_radix(f[2], 16).unwrap());
        let (b, e) = range.split_once('-').unwrap();
        let (b, e) = (
            u64::from_str_radix(b, 16).unwrap(),
            u64::from_str_radix(e, 16).unwrap(),
        );
        if f.get(5) == Some(&"[stack]") {
            stack_end = e;
        }
        let Some(path) = f
            .get(5)
            .filter(|p| p.starts_with('/') && perms.contains('x'))
        else {
            continue;
        };
        let (table, data) = tables.entry(path.to_string()).or_insert_with(|| {
            let data = std::fs::read(path).unwrap();
            (Rc::new(Table::from_elf(&data).expect("table")), data)
        });
        process.0.push((b, e, bias(data, b, offset), table.clone()));
    }
    assert!(stack_end > 0);

    let out = Command::new(gdb)
        .args([
            "-batch",
            "-nx",
            "-iex",
            "set debuginfod enabled off",
            "-iex",
            "set backtrace past-main on",
            "-p",
            &pid.to_string(),
        ])
        .arg("-x")
        .arg(&script)
        .env("PYRO_STACK_END", format!("{stack_end:x}"))
        .env("PYRO_STACK_DUMP", &dump)
        .output()
        .unwrap();
    child.kill().ok();
    child.wait().ok();
    let text = String::from_utf8_lossy(&out.stdout);
    let regs: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("REGS "))
        .unwrap_or_else(|| {
            panic!(
                "gdb gave no registers: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .split(' ')
        .map(|v| u64::from_str_radix(v, 16).unwrap())
        .collect();
    let gdb_frames: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FRAME "))
        .map(|l| {
            let (pc, name) = l.split_once(' ').unwrap();
            (u64::from_str_radix(pc, 16).unwrap(), name.to_string())
        })
        .collect();
    let synthetic = text.lines().filter(|l| l.starts_with("SYNTHETIC ")).count();
    println!(
        "gdb: {} stack frames, {synthetic} tail-call/inline frames it rebuilt",
        gdb_frames.len()
    );
    let names: Vec<&str> = gdb_frames.iter().map(|f| f.1.as_str()).collect();
    assert!(
        names.contains(&"_start"),
        "gdb's backtrace reaches _start: {names:?}"
    );

    let mut mem = Stack {
        base: regs[1],
        bytes: std::fs::read(&dump).unwrap(),
    };
    let mut cur = Regs {
        pc: regs[0],
        sp: regs[1],
        bp: regs[2],
    };
    let mut exact = true;
    let mut ours = vec![cur.pc];
    let end = loop {
        match step(&cur, exact, &process, &mut mem) {
            Step::Caller(c) if ours.len() < 128 => {
                cur = c.regs;
                exact = c.pc_is_exact;
                ours.push(cur.pc);
            }
            other => break other,
        }
    };
    let named: Vec<String> = ours
        .iter()
        .map(|pc| {
            let name = gdb_frames
                .iter()
                .find(|f| f.0 == *pc)
                .map_or("?", |f| f.1.as_str());
            format!("{pc:#x} {name}")
        })
        .collect();
    println!("ours ({end:?}): {named:#?}");
    assert_eq!(
        end,
        Step::Stop,
        "the walk ends at _start's undefined return address"
    );
    let gdb_pcs: Vec<u64> = gdb_frames.iter().map(|f| f.0).collect();
    assert_eq!(
        ours, gdb_pcs,
        "frames differ from gdb's: ours {named:#?}, gdb {gdb_frames:#x?}"
    );
    std::fs::remove_dir_all(&dir).ok();
    gdb_frames.into_iter().map(|f| f.1).collect()
}
