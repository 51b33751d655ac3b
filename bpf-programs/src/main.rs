//! Kernel side of the pyro eBPF CPU profiler.
//!
//! One `perf_event` program, attached by user space (`pyro-ebpf`) to a software cpu-clock event
//! on every online CPU in frequency mode. On each event it:
//!
//! 1. skips the idle task (pid 0) and processes the pid filter map marks as ignored;
//! 2. reserves a [`SampleRecord`] in the `EVENTS` ring buffer (a full buffer is counted as a lost
//!    sample), and captures the user and kernel stacks straight into it with `bpf_get_stack`, so
//!    no stack is ever lost to stack-map hash collisions;
//! 3. for a process user space put into `PY_PROCS` (CPython 3.8–3.15, `python_enabled`), reserves
//!    a [`PySampleRecord`] instead and walks the thread's Python frames into it (see
//!    [`walk_python`]): the running thread's `PyThreadState` through the thread pointer and the
//!    interpreter's pthread key (3.15: a static TLS variable at a fixed offset from it), then at most [`MAX_PYTHON_FRAMES`] frames, one code object
//!    address each;
//! 4. submits it without waking the reader: user space polls on a timer.
//!
//! Every drop and every stack-read error is counted in the per-CPU `COUNTERS` array.
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::mem::size_of;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{BPF_F_MMAPABLE, BPF_F_USER_STACK, BPF_RB_NO_WAKEUP};
use aya_ebpf::helpers::generated::{
    bpf_get_current_comm, bpf_get_current_task, bpf_get_current_task_btf, bpf_get_smp_processor_id,
    bpf_get_stack, bpf_task_pt_regs,
};
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user};
use aya_ebpf::macros::{map, perf_event};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, PerCpuArray, ProgramArray, RingBuf};
use aya_ebpf::programs::PerfEventContext;
use pyro_ebpf_common::python::{FrameModel, MAX_PYTHON_FRAMES, NONE, PyProcConfig};
use pyro_ebpf_common::unwind::{
    EXEC_MAPPINGS_MAP_SIZE, FRAMES_PER_PROGRAM, MAX_TAIL_CALLS, Mapping, MappingKey, MappingKind,
    PAGE_BITS, PAGE_MASK, PageKey, PageValue, Regs, Row, RowArray, RowLookup, Step,
    UNWIND_PROCS_MAP_SIZE, UnwindState, frame_pointer_step, search_page,
};
use pyro_ebpf_common::{
    COMM_LEN, Counter, FLAG_KERNEL_STACK_ERROR, FLAG_USER_STACK_ERROR, MAX_STACK_DEPTH,
    PIDS_MAP_SIZE, PY_FLAG_FRAME_ERROR, PY_FLAG_NO_KEY, PY_FLAG_NO_THREAD_STATE,
    PY_FLAG_STATE_ERROR, PY_FLAG_TRUNCATED, PY_PROCS_MAP_SIZE, PidState, PySampleRecord,
    SampleRecord,
};

/// Whether to capture user stacks (set at load time by user space).
#[unsafe(no_mangle)]
static PYRO_COLLECT_USER: u32 = 1;

/// Whether to capture kernel stacks (set at load time by user space).
#[unsafe(no_mangle)]
static PYRO_COLLECT_KERNEL: u32 = 1;

/// Whether to walk Python frames (`python_enabled`, set at load time by user space).
#[unsafe(no_mangle)]
static PYRO_PYTHON_ENABLED: u32 = 1;

/// Offset of the thread pointer (`thread.fsbase` on x86_64) in `task_struct`, from the
/// kernel's BTF (set at load time by user space; 0 disables the Python walker).
#[unsafe(no_mangle)]
static PYRO_TASK_TP_OFFSET: u64 = 0;

/// Whether to unwind user stacks from tables (`unwind_tables_enabled`, set at load time).
#[unsafe(no_mangle)]
static PYRO_UNWIND_ENABLED: u32 = 0;

/// tgid → 1 for the processes whose executable mappings user space put into `EXEC_MAPPINGS`.
#[map]
static UNWIND_PROCS: HashMap<u32, u32> = HashMap::with_max_entries(UNWIND_PROCS_MAP_SIZE, 0);

/// {tgid, address} → [`Mapping`]: the executable mappings of the processes in `UNWIND_PROCS`.
#[map]
static EXEC_MAPPINGS: LpmTrie<MappingKey, Mapping> =
    LpmTrie::with_max_entries(EXEC_MAPPINGS_MAP_SIZE, 0);

/// {file, 64 KiB page} → the page's rows in `UNWIND_ROWS` (sized by user space).
#[map]
static UNWIND_PAGES: HashMap<PageKey, PageValue> = HashMap::with_max_entries(1, 0);

/// Every loaded table's rows, one array (sized by user space from the memory budget; written
/// through `mmap`).
#[map]
static UNWIND_ROWS: Array<Row> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The table unwinder's sample in progress, carried across its tail calls.
#[map]
static UNWIND_STATE: PerCpuArray<UnwindState> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: the table unwinder (`pyro_unwind_user`), set by user space.
#[map]
static UNWIND_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// tgid → [`PyProcConfig`] of the CPython processes user space detected.
#[map]
static PY_PROCS: HashMap<u32, PyProcConfig> = HashMap::with_max_entries(PY_PROCS_MAP_SIZE, 0);

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
    if enabled(&PYRO_PYTHON_ENABLED) {
        // SAFETY: the value is only read (copied field by field) while the program runs.
        if let Some(cfg) = unsafe { PY_PROCS.get(&pid) } {
            let Some(mut entry) = EVENTS.reserve::<PySampleRecord>(0) else {
                count(Counter::RingBufFull);
                return 0;
            };
            let rec = entry.as_mut_ptr();
            // SAFETY: `rec` points at a reserved, writable entry of `PySampleRecord` size, whose
            // first field is the `SampleRecord`.
            unsafe {
                fill(&ctx, core::ptr::addr_of_mut!((*rec).sample), pid_tgid, true);
                walk_python(cfg, rec);
                if (*rec).py_flags & (PY_FLAG_STATE_ERROR | PY_FLAG_FRAME_ERROR) != 0 {
                    count(Counter::PythonReadErrors);
                }
            }
            entry.submit(u64::from(BPF_RB_NO_WAKEUP));
            count(Counter::PythonSamples);
            count(Counter::Sent);
            return 0;
        }
    }
    if enabled(&PYRO_UNWIND_ENABLED)
        && enabled(&PYRO_COLLECT_USER)
        && UNWIND_PROCS.get_ptr(pid).is_some()
    {
        // Returns only when the table unwinder cannot run; the frame-pointer path follows.
        start_table_unwind(&ctx, pid_tgid);
    }
    let Some(mut entry) = EVENTS.reserve::<SampleRecord>(0) else {
        count(Counter::RingBufFull);
        return 0;
    };
    // SAFETY: `entry` is a reserved, writable ring buffer entry of `SampleRecord` size.
    unsafe { fill(&ctx, entry.as_mut_ptr(), pid_tgid, true) };
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
    count(Counter::Sent);
    0
}

/// Fills the native part of a sample (the user stack by frame pointer only when `user_stack`).
///
/// # Safety
/// `rec` points at a writable `SampleRecord` (in a reserved ring buffer entry or a map value).
#[inline(always)]
unsafe fn fill(ctx: &PerfEventContext, rec: *mut SampleRecord, pid_tgid: u64, user_stack: bool) {
    let mut flags = 0u32;
    // SAFETY: see the function's contract.
    unsafe {
        (*rec).pid = (pid_tgid >> 32) as u32;
        (*rec).tid = pid_tgid as u32;
        (*rec).cpu = bpf_get_smp_processor_id();
        if bpf_get_current_comm((*rec).comm.as_mut_ptr().cast::<c_void>(), COMM_LEN as u32) < 0 {
            (*rec).comm = [0; COMM_LEN];
        }
        (*rec).user_len = 0;
        if user_stack && enabled(&PYRO_COLLECT_USER) {
            match stack(ctx, (*rec).user.as_mut_ptr(), u64::from(BPF_F_USER_STACK)) {
                Some(n) => (*rec).user_len = n,
                None => {
                    flags |= FLAG_USER_STACK_ERROR;
                    count(Counter::UserStackError);
                }
            }
        }
        (*rec).kernel_len = 0;
        if enabled(&PYRO_COLLECT_KERNEL) {
            match stack(ctx, (*rec).kernel.as_mut_ptr(), 0) {
                Some(n) => (*rec).kernel_len = n,
                None => {
                    flags |= FLAG_KERNEL_STACK_ERROR;
                    count(Counter::KernelStackError);
                }
            }
        }
        (*rec).flags = flags;
    }
}

/// Byte offsets in x86_64 `struct pt_regs` (the perf_event context starts with one).
const PT_REGS_RBP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_CS: usize = 17 * 8;
const PT_REGS_SP: usize = 19 * 8;

/// The user registers of the current task: the sampled ones when the sample hit user mode,
/// else those saved at kernel entry (`bpf_task_pt_regs`); `None` for a kernel thread.
#[inline(always)]
fn user_regs(ctx: &PerfEventContext) -> Option<Regs> {
    let at = |base: *const u8, off: usize| -> u64 {
        // SAFETY: a read inside the perf_event context's `pt_regs` (the verifier checks it).
        unsafe { core::ptr::read_volatile(base.add(off).cast::<u64>()) }
    };
    let c = ctx.as_ptr().cast::<u8>().cast_const();
    if at(c, PT_REGS_CS) & 3 == 3 {
        return Some(Regs {
            pc: at(c, PT_REGS_IP),
            sp: at(c, PT_REGS_SP),
            bp: at(c, PT_REGS_RBP),
        });
    }
    // SAFETY: the current task is valid while the program runs; the helper returns its
    // `pt_regs`, read with checked kernel reads.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let read = |off: usize| -> Option<u64> {
        // SAFETY: a checked kernel read.
        unsafe { bpf_probe_read_kernel((regs + off as u64) as *const u64) }.ok()
    };
    if regs == 0 || read(PT_REGS_CS)? & 3 != 3 {
        return None;
    }
    Some(Regs {
        pc: read(PT_REGS_IP)?,
        sp: read(PT_REGS_SP)?,
        bp: read(PT_REGS_RBP)?,
    })
}

/// Fills the per-CPU unwinder state with the sample's header, kernel stack and user registers
/// and tail-calls the table unwinder. Returns only when it could not (no user registers, no
/// state, the program array not set): the caller then takes the frame-pointer path.
#[inline(always)]
fn start_table_unwind(ctx: &PerfEventContext, pid_tgid: u64) {
    let Some(regs) = user_regs(ctx) else {
        return;
    };
    let Some(st) = UNWIND_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `st` is this CPU's state slot (perf_event programs do not nest on one CPU).
    unsafe {
        fill(ctx, core::ptr::addr_of_mut!((*st).record), pid_tgid, false);
        (*st).record.user_len = 0;
        (*st).pc = regs.pc;
        (*st).sp = regs.sp;
        (*st).bp = regs.bp;
        (*st).pc_is_exact = 1;
        (*st).tail_calls = 0;
        UNWIND_PROGS.tail_call(ctx, 0);
    }
}

/// The row array of every table, as [`search_page`] reads it.
struct GlobalRows;

impl RowArray for GlobalRows {
    #[inline(always)]
    fn row(&self, index: u32) -> Option<Row> {
        UNWIND_ROWS.get(index).copied()
    }

    #[inline(always)]
    fn opaque_lo(&self, v: u32) -> u32 {
        opaque(0, v)
    }

    #[inline(always)]
    fn opaque_hi(&self, v: u32) -> u32 {
        opaque(1, v)
    }
}

/// Per-CPU scratch for [`opaque`].
#[map]
static SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(2, 0);

/// `v` through a per-CPU map slot: the verifier sees an unknown value, so loop states that
/// differ only by it are pruned.
#[inline(always)]
fn opaque(slot: u32, v: u32) -> u32 {
    match SCRATCH.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot; volatile so the round trip is kept.
        Some(p) => unsafe {
            core::ptr::write_volatile(p, v);
            core::ptr::read_volatile(p)
        },
        None => v,
    }
}

/// Rows of the current process's mappings: trie, page index, row search.
struct Tables {
    tgid: u32,
}

impl RowLookup for Tables {
    #[inline(always)]
    fn lookup(&self, pc: u64) -> Option<Row> {
        let m = EXEC_MAPPINGS.get(Key::new(128, MappingKey::new(self.tgid, pc)))?;
        if m.kind != MappingKind::Table as u32 {
            return None;
        }
        let rel = pc.wrapping_sub(m.bias);
        // SAFETY: the value is only read.
        let page = unsafe {
            UNWIND_PAGES.get(&PageKey {
                file_id: m.file_id,
                page: rel >> PAGE_BITS,
            })
        }?;
        let index = search_page(&GlobalRows, page, (rel & PAGE_MASK) as u16)?;
        GlobalRows.row(index)
    }
}

/// User memory of the current process.
struct UserMem;

impl pyro_ebpf_common::unwind::Memory for UserMem {
    #[inline(always)]
    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        user::<u64>(addr)
    }
}

/// Records the frame in `st` and steps to its caller; `true` when the walk is over.
///
/// # Safety
/// `st` is this CPU's unwinder state.
#[inline(always)]
unsafe fn unwind_frame(st: *mut UnwindState, tgid: u32) -> bool {
    // SAFETY: see the function's contract.
    unsafe {
        let len = core::ptr::addr_of_mut!((*st).record.user_len);
        let n = core::ptr::read_volatile(len) as usize;
        let regs = Regs {
            pc: core::ptr::read_volatile(core::ptr::addr_of!((*st).pc)),
            sp: core::ptr::read_volatile(core::ptr::addr_of!((*st).sp)),
            bp: core::ptr::read_volatile(core::ptr::addr_of!((*st).bp)),
        };
        let Some(slot) = (*st).record.user.get_mut(n) else {
            count(Counter::TableTruncated);
            return true;
        };
        *slot = regs.pc;
        core::ptr::write_volatile(len, n as u32 + 1);
        let exact = core::ptr::read_volatile(core::ptr::addr_of!((*st).pc_is_exact)) != 0;
        let next =
            match pyro_ebpf_common::unwind::step(&regs, exact, &Tables { tgid }, &mut UserMem) {
                Step::NoInfo => {
                    count(Counter::TableFpFrames);
                    frame_pointer_step(&regs, &mut UserMem)
                }
                Step::Unsupported => {
                    count(Counter::UnsupportedRows);
                    frame_pointer_step(&regs, &mut UserMem)
                }
                other => other,
            };
        let Step::Caller(c) = next else {
            return true;
        };
        // A caller's frame is above its callee's; anything else is a corrupt stack.
        if c.regs.sp <= regs.sp && !c.pc_is_exact {
            return true;
        }
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*st).pc), c.regs.pc);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*st).sp), c.regs.sp);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*st).bp), c.regs.bp);
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!((*st).pc_is_exact),
            u32::from(c.pc_is_exact),
        );
        false
    }
}

/// The table unwinder: walks [`FRAMES_PER_PROGRAM`] user frames of the sample in
/// `UNWIND_STATE` (see `pyro_ebpf_common::unwind::step`; the frame pointer where no table
/// covers a pc or a row is unsupported), then tail-calls itself, at most [`MAX_TAIL_CALLS`]
/// times, or sends the sample.
#[perf_event]
pub fn pyro_unwind_user(ctx: PerfEventContext) -> u32 {
    let Some(st) = UNWIND_STATE.get_ptr_mut(0) else {
        return 0;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let mut done = false;
    for _ in 0..FRAMES_PER_PROGRAM {
        // SAFETY: `st` is this CPU's state slot.
        if unsafe { unwind_frame(st, tgid) } {
            done = true;
            break;
        }
    }
    if !done {
        // SAFETY: as above.
        unsafe {
            let calls = core::ptr::read_volatile(core::ptr::addr_of!((*st).tail_calls));
            if calls < MAX_TAIL_CALLS {
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*st).tail_calls), calls + 1);
                UNWIND_PROGS.tail_call(&ctx, 0);
            }
        }
        count(Counter::TableTruncated);
    }
    // SAFETY: as above; the record is copied into the ring buffer.
    match EVENTS.output::<SampleRecord>(unsafe { &(*st).record }, u64::from(BPF_RB_NO_WAKEUP)) {
        Ok(()) => {
            count(Counter::Sent);
            count(Counter::TableSamples);
        }
        Err(_) => count(Counter::RingBufFull),
    }
    0
}

/// Reads a `T` at `addr` in the current process.
#[inline(always)]
fn user<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// Reads 8 bytes at `addr` in the current process into `dst`; `dst` is zeroed when the read
/// fails (the helper's contract), so the caller need not branch.
///
/// # Safety
/// `dst` points at 8 writable bytes.
#[inline(always)]
unsafe fn raw_user(dst: *mut u64, addr: u64) {
    // SAFETY: see the function's contract; the helper checks `addr`.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            dst.cast::<c_void>(),
            8,
            addr as *const c_void,
        );
    }
}

/// Walks the Python frames of the current thread into `rec` (`py_code`: code object addresses,
/// leaf first; `py_len`; `py_flags`), as `pyro-python`'s reference walker does
/// (`pyro_python::walker`).
///
/// Bound: one loop of [`MAX_PYTHON_FRAMES`] (128) steps with a constant trip count, which the
/// verifier accepts (bounded loops, kernel 5.3+). 3.12+ C-stack shim frames count toward the
/// steps but are not reported (frames whose `owner` is `owner_incomplete` or above: C-stack
/// shims, 3.14+'s interpreter base frames). Per step 2 or 3 `bpf_probe_read_user` of 8 bytes or less
/// (`previous`, `owner` on 3.12+, `f_code`), plus 2 before 3.11 (`localsplus[0]` and its
/// `ob_type`, for the class of methods); no strings are read here. The frame count and the
/// flags live in the record (volatile accesses), not in registers, so that the verifier's
/// states at the loop head do not differ by them and are pruned: the walk verifies in a few
/// thousand instructions instead of exploding past the one-million limit.
///
/// # Safety
/// `rec` points at a writable `PySampleRecord` inside a reserved ring buffer entry.
#[inline(always)]
unsafe fn walk_python(cfg: &PyProcConfig, rec: *mut PySampleRecord) {
    // SAFETY: see the function's contract.
    unsafe {
        let len = core::ptr::addr_of_mut!((*rec).py_len);
        let flags = core::ptr::addr_of_mut!((*rec).py_flags);
        core::ptr::write_volatile(len, 0);
        core::ptr::write_volatile(flags, 0);
        let frame = top_frame(cfg);
        let mut frame = match frame {
            Ok(frame) => frame,
            Err(flag) => {
                core::ptr::write_volatile(flags, flag);
                return;
            }
        };
        let o = &cfg.offsets;
        let skip_shims = o.owner_incomplete != 0xff;
        // Before 3.11 the class of a method comes from its first argument (as pyperf).
        let read_args = o.frame_model == FrameModel::FrameObject as u8;
        for _ in 0..MAX_PYTHON_FRAMES {
            if frame == 0 {
                break;
            }
            let Some(back) = user::<u64>(frame + u64::from(o.frame_back)) else {
                core::ptr::write_volatile(
                    flags,
                    core::ptr::read_volatile(flags) | PY_FLAG_FRAME_ERROR,
                );
                frame = 0;
                break;
            };
            if skip_shims {
                let owner = user::<u8>(frame + u64::from(o.frame_owner)).unwrap_or(0);
                if owner >= o.owner_incomplete {
                    frame = back;
                    continue;
                }
            }
            // 3.14+: a `_PyStackRef`, whose low bits are tags.
            let code = user::<u64>(frame + u64::from(o.frame_code)).unwrap_or(0)
                & !u64::from(o.frame_code_tag_bits);
            if code == 0 {
                core::ptr::write_volatile(
                    flags,
                    core::ptr::read_volatile(flags) | PY_FLAG_FRAME_ERROR,
                );
            }
            let n = core::ptr::read_volatile(len);
            let i = (n as usize) & (MAX_PYTHON_FRAMES - 1);
            (*rec).py_code[i] = code;
            (*rec).py_arg0[i] = 0;
            (*rec).py_arg0_type[i] = 0;
            if read_args {
                // Read straight into the record, without branching on the outcome (a failed
                // read leaves 0): every branch here multiplies the verifier's paths.
                let arg0 = core::ptr::addr_of_mut!((*rec).py_arg0[i]);
                raw_user(arg0, frame + u64::from(o.frame_localsplus));
                let arg0_value = core::ptr::read_volatile(arg0);
                raw_user(
                    core::ptr::addr_of_mut!((*rec).py_arg0_type[i]),
                    arg0_value + u64::from(o.object_type),
                );
            }
            core::ptr::write_volatile(len, n + 1);
            frame = back;
        }
        if frame != 0 {
            core::ptr::write_volatile(flags, core::ptr::read_volatile(flags) | PY_FLAG_TRUNCATED);
        }
    }
}

/// The top `_PyInterpreterFrame` / `PyFrameObject` of the current thread (0 when it runs no
/// Python code), or the `PY_FLAG_*` saying why there is none.
#[inline(always)]
fn top_frame(cfg: &PyProcConfig) -> Result<u64, u32> {
    let o = &cfg.offsets;
    // SAFETY: reading a static; volatile so the load-time value is used.
    let tp_offset = unsafe { core::ptr::read_volatile(&PYRO_TASK_TP_OFFSET) };
    if tp_offset == 0 {
        return Err(PY_FLAG_STATE_ERROR);
    }
    // SAFETY: the current task is valid while the program runs.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: a checked kernel read.
    let tp = unsafe { bpf_probe_read_kernel((task + tp_offset) as *const u64) }
        .map_err(|_| PY_FLAG_STATE_ERROR)?;
    let tstate = if o.runtime_tss_key == NONE {
        // 3.15+: `_Py_tss_gilstate`, a static TLS variable at a fixed offset from the thread
        // pointer (below it on x86_64: the offset wraps).
        user::<u64>(tp.wrapping_add(cfg.tstate_tls_offset)).ok_or(PY_FLAG_STATE_ERROR)?
    } else {
        thread_state_by_key(cfg, tp)?
    };
    if tstate == 0 {
        return Err(PY_FLAG_NO_THREAD_STATE);
    }
    let frame = user::<u64>(tstate + u64::from(o.tstate_frame)).ok_or(PY_FLAG_STATE_ERROR)?;
    if o.frame_model == FrameModel::CFrame as u8 && frame != 0 {
        return user::<u64>(frame + u64::from(o.cframe_current_frame)).ok_or(PY_FLAG_STATE_ERROR);
    }
    Ok(frame)
}

/// The `PyThreadState` CPython's pthread key maps the thread at `tp` to (up to 3.14), by
/// glibc's `struct pthread.specific_1stblock`.
#[inline(always)]
fn thread_state_by_key(cfg: &PyProcConfig, tp: u64) -> Result<u64, u32> {
    let o = &cfg.offsets;
    // `Py_tss_t { int _is_initialized; pthread_key_t _key; }`
    let initialised = user::<u32>(cfg.tss_key_addr).ok_or(PY_FLAG_STATE_ERROR)?;
    let key = user::<u32>(cfg.tss_key_addr + u64::from(o.tss_key)).ok_or(PY_FLAG_STATE_ERROR)?;
    if initialised == 0 || key >= 32 {
        return Err(PY_FLAG_NO_KEY);
    }
    user::<u64>(tp + cfg.tls_key0_data + 16 * u64::from(key)).ok_or(PY_FLAG_STATE_ERROR)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the program has no reachable panics; the verifier rejects any loop here anyway.
    unsafe { core::hint::unreachable_unchecked() }
}
