//! Measurements the benchmarks and cost examples take: this process's CPU time and the
//! in-kernel run time of the BPF programs it holds.

use std::time::Duration;

/// CPU time (user + system) of this process.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer, RUSAGE_SELF.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `run_time_ns` and `run_cnt` summed over the BPF programs this process holds
/// (`/proc/self/fdinfo`; counted only with `kernel.bpf_stats_enabled` on).
pub fn bpf_run_time() -> (u64, u64) {
    let (mut ns, mut cnt) = (0, 0);
    for e in std::fs::read_dir("/proc/self/fdinfo")
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if !text.contains("prog_type") {
            continue;
        }
        for line in text.lines() {
            let field = |name: &str| -> Option<u64> {
                line.strip_prefix(name).and_then(|v| v.trim().parse().ok())
            };
            if let Some(v) = field("run_time_ns:") {
                ns += v;
            }
            if let Some(v) = field("run_cnt:") {
                cnt += v;
            }
        }
    }
    (ns, cnt)
}
