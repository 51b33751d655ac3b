//! Kernel side of the pyro eBPF CPU profiler.
//!
//! One `perf_event` program, attached by user space (`pyro-ebpf`) to a software cpu-clock event
//! on every online CPU in frequency mode. On each event it:
//!
//! 1. skips the idle task (pid 0) and processes the pid filter map marks as ignored;
//! 2. reserves a [`SampleRecord`] in the `EVENTS` ring buffer (a full buffer is counted as a lost
//!    sample), and captures the user and kernel stacks straight into it with `bpf_get_stack`, so
//!    no stack is ever lost to stack-map hash collisions;
//! 3. submits it without waking the reader: user space polls on a timer.
//!
//! Every drop and every stack-read error is counted in the per-CPU `COUNTERS` array.
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::mem::size_of;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{BPF_F_USER_STACK, BPF_RB_NO_WAKEUP};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::generated::{bpf_get_current_comm, bpf_get_smp_processor_id, bpf_get_stack};
use aya_ebpf::macros::{map, perf_event};
use aya_ebpf::maps::{HashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::PerfEventContext;
use pyro_ebpf_common::{
    COMM_LEN, Counter, FLAG_KERNEL_STACK_ERROR, FLAG_USER_STACK_ERROR, MAX_STACK_DEPTH,
    PIDS_MAP_SIZE, PidState, SampleRecord,
};

/// Whether to capture user stacks (set at load time by user space).
#[unsafe(no_mangle)]
static PYRO_COLLECT_USER: u32 = 1;

/// Whether to capture kernel stacks (set at load time by user space).
#[unsafe(no_mangle)]
static PYRO_COLLECT_KERNEL: u32 = 1;

/// Samples for user space. User space sizes it at load time (about a second of samples).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// tgid → [`PidState`]; absent processes are sampled until user space classifies them.
#[map]
static PIDS: HashMap<u32, u32> = HashMap::with_max_entries(PIDS_MAP_SIZE, 0);

/// Loss and activity counters, one `u64` per [`Counter`] per CPU.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

const STACK_BYTES: u32 = (MAX_STACK_DEPTH * size_of::<u64>()) as u32;

#[inline(always)]
fn count(counter: Counter) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a successful lookup in this CPU's slot; perf_event
        // programs do not nest on one CPU, so the increment does not race.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn enabled(flag: &'static u32) -> bool {
    // SAFETY: reading a static; volatile so the value user space writes at load time is used
    // instead of the compile-time default.
    unsafe { core::ptr::read_volatile(flag) != 0 }
}

/// Captures one stack into `buf`, returning the number of frames or `None` on error.
#[inline(always)]
fn stack(ctx: &PerfEventContext, buf: *mut u64, flags: u64) -> Option<u32> {
    // SAFETY: `buf` points at `MAX_STACK_DEPTH` u64s inside a reserved ring buffer entry.
    let n = unsafe { bpf_get_stack(ctx.as_ptr(), buf.cast::<c_void>(), STACK_BYTES, flags) };
    if n < 0 {
        None
    } else {
        Some((n as u64 / size_of::<u64>() as u64) as u32)
    }
}

/// The sampling program.
#[perf_event]
pub fn pyro_cpu_sample(ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if pid == 0 {
        count(Counter::Idle);
        return 0;
    }
    if let Some(state) = PIDS.get_ptr(pid) {
        // SAFETY: a value pointer from a successful lookup.
        if unsafe { *state } == PidState::Ignore as u32 {
            count(Counter::Filtered);
            return 0;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<SampleRecord>(0) else {
        count(Counter::RingBufFull);
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let mut flags = 0u32;
    // SAFETY: `rec` points at a reserved, writable ring buffer entry of `SampleRecord` size.
    unsafe {
        (*rec).pid = pid;
        (*rec).tid = pid_tgid as u32;
        (*rec).cpu = bpf_get_smp_processor_id();
        if bpf_get_current_comm((*rec).comm.as_mut_ptr().cast::<c_void>(), COMM_LEN as u32) < 0 {
            (*rec).comm = [0; COMM_LEN];
        }
        (*rec).user_len = 0;
        if enabled(&PYRO_COLLECT_USER) {
            match stack(&ctx, (*rec).user.as_mut_ptr(), u64::from(BPF_F_USER_STACK)) {
                Some(n) => (*rec).user_len = n,
                None => {
                    flags |= FLAG_USER_STACK_ERROR;
                    count(Counter::UserStackError);
                }
            }
        }
        (*rec).kernel_len = 0;
        if enabled(&PYRO_COLLECT_KERNEL) {
            match stack(&ctx, (*rec).kernel.as_mut_ptr(), 0) {
                Some(n) => (*rec).kernel_len = n,
                None => {
                    flags |= FLAG_KERNEL_STACK_ERROR;
                    count(Counter::KernelStackError);
                }
            }
        }
        (*rec).flags = flags;
    }
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
    count(Counter::Sent);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the program has no reachable panics; the verifier rejects any loop here anyway.
    unsafe { core::hint::unreachable_unchecked() }
}
