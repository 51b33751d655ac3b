//! Kernel and user frames follow `collect_kernel_profile` and `collect_user_profile`: three
//! collectors with different settings profile the same syscall-heavy workload at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pyro_ebpf::{Collector, EbpfConfig};

/// Reads /dev/zero in 64 KiB chunks: most of its time is in the kernel (`read` → `vfs_read` →
/// `iov_iter_zero` …), the rest in `read_loop` and libc's `read`.
const SYSCALL_HEAVY: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
static char buf[1 << 16];
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
__attribute__((noinline)) int read_loop(int fd) {
    volatile int total = 0;
    for (int i = 0; i < 64; i++) total += read(fd, buf, sizeof buf);
    return total;
}
int main(int argc, char **argv) {
    double seconds = 4;
    if (argc > 1) sscanf(argv[1], "%lf", &seconds);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) return 2;
    double start = cpu_now();
    while (cpu_now() - start < seconds)
        if (read_loop(fd) <= 0) return 3;
    return 0;
}
"#;

/// Frames only the kernel has on the path of a `read` system call.
fn is_kernel_read_frame(f: &str) -> bool {
    matches!(f, "vfs_read" | "ksys_read" | "do_syscall_64") || f.contains("sys_read")
}

#[test]
fn kernel_and_user_frames_follow_the_switches() {
    let _serial = serial();
    if !bpf() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = compile_c(dir.path(), "syscalls", SYSCALL_HEAVY) else {
        return;
    };
    let mut workload = Workload::spawn(&bin, &["4"]);
    let pid = workload.pid();
    let with = |user: bool, kernel: bool| {
        collector(
            EbpfConfig {
                collect_user_profile: user,
                collect_kernel_profile: kernel,
                ..EbpfConfig::default()
            },
            vec![pid_target(pid, "syscalls")],
        )
    };
    let mut both = with(true, true);
    let mut user_only = with(true, false);
    let mut kernel_only = with(false, true);
    workload.go();
    let start = Instant::now();
    while !workload.exited() && start.elapsed() < Duration::from_secs(60) {
        for c in [&mut both, &mut user_only, &mut kernel_only] {
            c.poll();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    workload.wait();

    let collect = |c: &mut Collector| {
        let profiles = c.collect();
        let p = profile_of(&profiles, pid).expect("profile").clone();
        check_with_go_pprof(&p, dir.path());
        stacks(&p)
    };
    let share = |stacks: &[pyro_core::pprof::FoldedStack], pred: &dyn Fn(&str) -> bool| {
        let total: i64 = stacks.iter().map(|s| s.value).sum();
        let hit: i64 = stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| pred(f)))
            .map(|s| s.value)
            .sum();
        100.0 * hit as f64 / total.max(1) as f64
    };
    let user_frame = |f: &str| matches!(f, "main" | "read_loop");

    // Both: most samples are in the kernel, under `main`.
    let both = collect(&mut both);
    let kernel_share = share(&both, &is_kernel_read_frame);
    let user_share = share(&both, &user_frame);
    eprintln!("both: kernel frames in {kernel_share:.1}%, user frames in {user_share:.1}%");
    assert!(kernel_share >= 50.0, "kernel frames in {kernel_share:.1}%");
    assert!(user_share >= 95.0, "user frames in {user_share:.1}%");
    assert!(
        both.iter().any(|s| {
            // libc's `read` has no frame pointer, so the walk goes from it to `main`, skipping
            // `read_loop` (as with any frame-pointer unwinder).
            let read_loop = s.frames.iter().position(|f| f == "main");
            let kernel = s.frames.iter().position(|f| is_kernel_read_frame(f));
            matches!((read_loop, kernel), (Some(u), Some(k)) if u < k)
        }),
        "no stack with kernel frames under main"
    );

    // Kernel off: the same user frames, not one kernel frame.
    let user_only = collect(&mut user_only);
    let kernel_share = share(&user_only, &is_kernel_read_frame);
    let user_share = share(&user_only, &user_frame);
    eprintln!("user only: kernel frames in {kernel_share:.1}%, user frames in {user_share:.1}%");
    assert_eq!(kernel_share, 0.0);
    assert!(user_share >= 95.0, "user frames in {user_share:.1}%");

    // User off: kernel frames only; samples taken in user mode have no stack and are dropped.
    let kernel_only = collect(&mut kernel_only);
    let kernel_share = share(&kernel_only, &is_kernel_read_frame);
    let user_share = share(&kernel_only, &user_frame);
    eprintln!("kernel only: kernel frames in {kernel_share:.1}%, user frames in {user_share:.1}%");
    assert_eq!(user_share, 0.0);
    assert!(kernel_share >= 90.0, "kernel frames in {kernel_share:.1}%");
    assert!(kernel_only.iter().all(|s| s.frames[0] == "syscalls"));
}
