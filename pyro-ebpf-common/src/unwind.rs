//! Compact unwind tables for native user stacks without frame pointers (x86_64), as the BPF
//! unwinder reads them, and the host twin of its frame step.
//!
//! User space (`pyro-unwind`) turns the `.eh_frame`/`.debug_frame` of one ELF file into a sorted
//! array of 8-byte [`Row`]s (one per address where the unwind rule changes) and a page index
//! ([`PageKey`] → [`PageValue`]). The BPF side finds the mapping of a pc in an LPM trie
//! ([`MappingKey`] → [`Mapping`]), the page of `pc - bias` in the page index, and the row with
//! [`search_page`]; [`step`] then computes the caller's registers. The same functions run on the
//! host in the tests, so what the tests prove about them holds for the kernel side.
//!
//! # Layout, and why
//!
//! * **8-byte rows** (lightswitch's layout): the low 16 bits of the pc within its 64 KiB page,
//!   the CFA rule, the RBP rule and their two offsets. Each table is self-contained (no global
//!   rule index as in the OpenTelemetry profiler's 4-byte rows), so one table per file identity
//!   can be built, cached, loaded and evicted on its own. libc is ≈ 24 k rows, ≈ 190 KiB.
//! * **64 KiB pages**: the page index stores the full upper bits once per page, so a row needs
//!   only 16 bits of pc; one hash lookup narrows the search to the rows of one page.
//! * **≤ 16 search steps**: a page holds at most [`MAX_PAGE_ROWS`] rows (the builder refuses
//!   more), so 16 halvings always finish. When the pc is before the first row of its page the
//!   governing row is the one before it, the last row of an earlier page; the search returns
//!   `first - 1` there, so a function that starts in one page and continues in the next needs no
//!   copied row (the OpenTelemetry profiler's trick). Every page between the first and the last
//!   row has an entry, empty ones with `count == 0`, so a long function spanning whole pages
//!   without a rule change is still found.
//! * Fixed-size loops only, no recursion, no panicking index: the code is written to pass the
//!   verifier when compiled for `bpfel-unknown-none`.
//!
//! ```
//! use pyro_ebpf_common::unwind::{CfaType, Memory, Regs, Row, RowLookup, Step, step};
//!
//! // A function after `push rbp; mov rbp, rsp`: CFA = RBP + 16, RBP saved at CFA - 16.
//! struct One;
//! impl RowLookup for One {
//!     fn lookup(&self, _pc: u64) -> Option<Row> {
//!         Some(Row::new(0, CfaType::RbpOffset, 16, Some(-16)))
//!     }
//! }
//! struct Stack;
//! impl Memory for Stack {
//!     fn read_u64(&mut self, addr: u64) -> Option<u64> {
//!         match addr {
//!             0x1000 => Some(0x2000),   // saved RBP at CFA - 16
//!             0x1008 => Some(0x40_1234), // return address at CFA - 8
//!             _ => None,
//!         }
//!     }
//! }
//! let regs = Regs { pc: 0x40_0100, sp: 0xf00, bp: 0x1000 };
//! match step(&regs, true, &One, &mut Stack) {
//!     Step::Caller(c) => {
//!         assert_eq!((c.regs.pc, c.regs.sp, c.regs.bp), (0x40_1234, 0x1010, 0x2000));
//!         assert!(!c.pc_is_exact); // a return address: look it up at pc - 1
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

/// Bits of pc per page of the index: 64 KiB pages.
pub const PAGE_BITS: u32 = 16;
/// Mask of the in-page part of a pc.
pub const PAGE_MASK: u64 = (1 << PAGE_BITS) - 1;
/// Binary search steps per lookup (unrolled on the BPF side).
pub const SEARCH_STEPS: u32 = 16;
/// Most rows one page may hold so that [`SEARCH_STEPS`] halvings always finish
/// (2^16 - 1; a page has 2^16 distinct pcs, and a row at every one of them is refused).
pub const MAX_PAGE_ROWS: u32 = (1 << SEARCH_STEPS) - 1;

/// Name of the LPM trie of executable mappings ([`MappingKey`] → [`Mapping`]).
pub const MAP_EXEC_MAPPINGS: &str = "EXEC_MAPPINGS";
/// Name of the page index ([`PageKey`] → [`PageValue`]).
pub const MAP_UNWIND_PAGES: &str = "UNWIND_PAGES";
/// Name of the map of per-file row arrays (file id → array of [`Row`]).
pub const MAP_UNWIND_TABLES: &str = "UNWIND_TABLES";
/// Name of the one global row array (`BPF_MAP_TYPE_ARRAY` of [`Row`], `BPF_F_MMAPABLE`, sized by
/// the memory budget) that holds every loaded table; [`PageValue::first`] indexes it. User space
/// places each table after one [`CfaType::End`] sentinel row, so the search's `first - 1` for a
/// pc before a table's first row never reaches another file's rows.
pub const MAP_UNWIND_ROWS: &str = "UNWIND_ROWS";
/// Name of the map of processes whose mappings are in [`MAP_EXEC_MAPPINGS`] (tgid → 1): their
/// samples are unwound by the table unwinder.
pub const MAP_UNWIND_PROCS: &str = "UNWIND_PROCS";
/// Name of the per-CPU [`UnwindState`] of the table unwinder.
pub const MAP_UNWIND_STATE: &str = "UNWIND_STATE";
/// Name of the program array the sampler tail-calls the table unwinder through (slot 0).
pub const MAP_UNWIND_PROGS: &str = "UNWIND_PROGS";
/// Name of the table unwinder program (a `perf_event` program reached by tail call).
pub const UNWIND_PROGRAM_NAME: &str = "pyro_unwind_user";
/// Name of the global that switches the table unwinder on (u32, set at load time).
pub const GLOBAL_UNWIND_ENABLED: &str = "PYRO_UNWIND_ENABLED";
/// Frames the table unwinder walks per program run; it tail-calls itself for more.
pub const FRAMES_PER_PROGRAM: u32 = 6;
/// Most tail calls of the table unwinder into itself (the kernel allows 33): with
/// [`FRAMES_PER_PROGRAM`] that covers the record's `MAX_STACK_DEPTH` frames.
pub const MAX_TAIL_CALLS: u32 = 24;
/// Most processes with tables ([`MAP_UNWIND_PROCS`]).
pub const UNWIND_PROCS_MAP_SIZE: u32 = 16_384;
/// Entries of the LPM trie of executable mappings (prefixes; a mapping takes a few).
pub const EXEC_MAPPINGS_MAP_SIZE: u32 = 262_144;

/// Per-CPU state of the table unwinder, carried across its tail calls: the sample being built
/// and the registers of the frame to step next.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UnwindState {
    /// The sample, as the frame-pointer path fills it; the unwinder appends user frames.
    pub record: crate::SampleRecord,
    /// pc of the next frame to record.
    pub pc: u64,
    /// Its stack pointer.
    pub sp: u64,
    /// Its frame pointer.
    pub bp: u64,
    /// 1 when `pc` is exact (the sampled pc, or after a signal frame), 0 for a return address.
    pub pc_is_exact: u32,
    /// Tail calls taken so far.
    pub tail_calls: u32,
}

/// Byte offsets in the `struct ucontext` a signal handler returns through (x86_64 kernel
/// `rt_sigframe`, after the handler's `ret` popped `pretcode`: `rsp` points at `uc`):
/// `uc_mcontext` starts at 40, and `gregs` are r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp,
/// rip. glibc's `__restore_rt` CFI states exactly these (`DW_OP_breg7 (rsp): 120/160/168`).
pub const UCONTEXT_RBP: u64 = 40 + 10 * 8;
/// Offset of the interrupted `rsp` in the ucontext (see [`UCONTEXT_RBP`]).
pub const UCONTEXT_RSP: u64 = 40 + 15 * 8;
/// Offset of the interrupted `rip` in the ucontext (see [`UCONTEXT_RBP`]).
pub const UCONTEXT_RIP: u64 = 40 + 16 * 8;

/// How the canonical frame address (the caller's stack pointer) is found, or what the row
/// commands instead. Stored as a `u8` in [`Row::cfa_type`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CfaType {
    /// The address is covered by no FDE (a gap between functions, or past the last one): no
    /// unwind information; the BPF side falls back to the frame pointer or stops.
    End = 0,
    /// CFA = RSP + [`Row::cfa_offset`].
    RspOffset = 1,
    /// CFA = RBP + [`Row::cfa_offset`].
    RbpOffset = 2,
    /// Lazy-binding `.plt` entry: CFA = RSP + 8 + (((pc & 15) >= 11) ? 8 : 0), the expression
    /// GNU ld writes for `.plt` (after the entry's `push` at offset 6 + 5).
    Plt1 = 3,
    /// As [`CfaType::Plt1`] with the threshold 10 (ld's IBT/`-z bndplt` `.plt` layout).
    Plt2 = 4,
    /// CFA = *(RSP + [`Row::deref_offset`]) + [`Row::deref_addend`].
    DerefRsp = 5,
    /// CFA = *(RBP + [`Row::deref_offset`]) + [`Row::deref_addend`] (gcc's stack
    /// realignment, `DW_OP_breg6 (rbp): -8; DW_OP_deref`).
    DerefRbp = 6,
    /// The rule cannot be followed in BPF (an unusual expression, a register rule, an offset
    /// that does not fit): counted by the builder; the BPF side falls back to the frame pointer.
    Unsupported = 7,
    /// A signal trampoline (glibc `__restore_rt`): the interrupted registers are in the
    /// `ucontext` at RSP ([`UCONTEXT_RIP`] etc.) and the next pc is exact (not a return address).
    Signal = 8,
    /// The outermost frame (the return address is undefined, as in `_start` and
    /// `clone`'s child): the stack ends here, completely.
    Stop = 9,
}

impl CfaType {
    /// The type stored as `v`, or `None` for an unknown value.
    #[inline(always)]
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::End,
            1 => Self::RspOffset,
            2 => Self::RbpOffset,
            3 => Self::Plt1,
            4 => Self::Plt2,
            5 => Self::DerefRsp,
            6 => Self::DerefRbp,
            7 => Self::Unsupported,
            8 => Self::Signal,
            9 => Self::Stop,
            _ => return None,
        })
    }
}

/// Where the caller's RBP is. Stored as a `u8` in [`Row::rbp_type`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RbpType {
    /// RBP is unchanged (DWARF "same value", or no rule).
    Unchanged = 0,
    /// RBP was saved at CFA + [`Row::rbp_offset`].
    CfaOffset = 1,
    /// RBP has no recoverable value (DWARF "undefined"); the caller's RBP is taken as 0.
    Undefined = 2,
}

/// One unwind row: the rule from its pc up to the next row's pc. 8 bytes.
///
/// For [`CfaType::DerefRsp`]/[`CfaType::DerefRbp`] the 16 bits of `cfa_offset` hold two
/// bytes: the signed offset from the register in units of 8 (low byte, `i8`) and the addend in
/// units of 8 (high byte, `u8`); see [`Row::deref_offset`] and [`Row::deref_addend`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Row {
    /// pc & [`PAGE_MASK`]: the row's first address within its page.
    pub pc_low: u16,
    /// A [`CfaType`] as `u8`.
    pub cfa_type: u8,
    /// An [`RbpType`] as `u8`.
    pub rbp_type: u8,
    /// CFA offset from the register ([`CfaType::RspOffset`], [`CfaType::RbpOffset`]), or the
    /// packed deref form.
    pub cfa_offset: u16,
    /// With [`RbpType::CfaOffset`]: RBP was saved at CFA + this.
    pub rbp_offset: i16,
}

const _: () = assert!(core::mem::size_of::<Row>() == 8);

impl Row {
    /// A row at in-page pc `pc_low` with CFA = register + `cfa_offset` and, if `rbp_offset` is
    /// `Some`, RBP saved at CFA + that offset (else unchanged).
    #[inline(always)]
    pub const fn new(
        pc_low: u16,
        cfa_type: CfaType,
        cfa_offset: u16,
        rbp_offset: Option<i16>,
    ) -> Self {
        let (rbp_type, rbp_offset) = match rbp_offset {
            Some(off) => (RbpType::CfaOffset as u8, off),
            None => (RbpType::Unchanged as u8, 0),
        };
        Row {
            pc_low,
            cfa_type: cfa_type as u8,
            rbp_type,
            cfa_offset,
            rbp_offset,
        }
    }

    /// A row carrying only a type (END, UNSUPPORTED, SIGNAL, STOP, PLT with unchanged RBP).
    #[inline(always)]
    pub const fn command(pc_low: u16, cfa_type: CfaType) -> Self {
        Row::new(pc_low, cfa_type, 0, None)
    }

    /// The CFA type, `None` for an unknown value (treated like [`CfaType::Unsupported`]).
    #[inline(always)]
    pub fn cfa(&self) -> Option<CfaType> {
        CfaType::from_u8(self.cfa_type)
    }

    /// Deref form: the offset from the register (bytes, a multiple of 8).
    #[inline(always)]
    pub fn deref_offset(&self) -> i64 {
        ((self.cfa_offset & 0xff) as u8 as i8 as i64) * 8
    }

    /// Deref form: the addend after the load (bytes, a multiple of 8).
    #[inline(always)]
    pub fn deref_addend(&self) -> u64 {
        ((self.cfa_offset >> 8) as u64) * 8
    }

    /// Packs a deref form's offset and addend into `cfa_offset`, if both fit (multiples of 8,
    /// offset in -1024..=1016, addend in 0..=2040).
    pub fn pack_deref(offset: i64, addend: i64) -> Option<u16> {
        if offset % 8 != 0 || addend % 8 != 0 {
            return None;
        }
        let o = i8::try_from(offset / 8).ok()?;
        let a = u8::try_from(addend / 8).ok()?;
        Some((o as u8 as u16) | ((a as u16) << 8))
    }

    /// Equal unwind rules (everything but the pc): such neighbours are merged.
    #[inline(always)]
    pub fn same_rule(&self, other: &Row) -> bool {
        self.cfa_type == other.cfa_type
            && self.rbp_type == other.rbp_type
            && self.cfa_offset == other.cfa_offset
            && self.rbp_offset == other.rbp_offset
    }
}

/// Key of the page index: one 64 KiB page of one file's table.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct PageKey {
    /// The file identity (see `pyro_unwind::FileId`).
    pub file_id: u64,
    /// (pc - bias) >> [`PAGE_BITS`], pc as an ELF virtual address.
    pub page: u64,
}

/// Value of the page index: the rows of the page in the file's row array.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageValue {
    /// Index of the page's first row in the file's row array (for an empty page: of the next
    /// row after it).
    pub first: u32,
    /// Rows in the page (≤ [`MAX_PAGE_ROWS`]).
    pub count: u32,
}

/// How the BPF side unwinds through a mapping. Stored as a `u32` in [`Mapping::kind`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingKind {
    /// The file's table is loaded: look the pc up in it.
    Table = 1,
    /// No table (JIT code, anonymous memory, a table not loaded or evicted): frame-pointer step.
    FramePointer = 2,
}

/// Data part of a key of the LPM trie of executable mappings. The trie key is
/// `{prefix_len: u32, data: MappingKey}`; the prefix covers the 64 bits of `tgid` and `pad`,
/// then the leading bits of `addr`. Both integers are **big-endian** (byte-wise prefixes); use
/// [`MappingKey::new`] and [`lpm_prefixes`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MappingKey {
    /// tgid, big-endian.
    pub tgid_be: u32,
    /// Always 0.
    pub pad: u32,
    /// Address, big-endian.
    pub addr_be: u64,
}

impl MappingKey {
    /// The key of `addr` in process `tgid`.
    #[inline(always)]
    pub fn new(tgid: u32, addr: u64) -> Self {
        MappingKey {
            tgid_be: tgid.to_be(),
            pad: 0,
            addr_be: addr.to_be(),
        }
    }
}

/// Bits of a [`MappingKey`] before the address (tgid and pad).
pub const MAPPING_KEY_FIXED_BITS: u32 = 64;

/// Value of the LPM trie of executable mappings.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mapping {
    /// The file identity: key of its table.
    pub file_id: u64,
    /// Load bias: runtime pc - bias = ELF virtual address, the table's address space.
    pub bias: u64,
    /// First address of the mapping (runtime).
    pub begin: u64,
    /// One past its last address (runtime).
    pub end: u64,
    /// A [`MappingKind`] as `u32`.
    pub kind: u32,
    /// Always 0.
    pub pad: u32,
}

/// The prefixes that cover `[begin, end)` exactly, in address order: `(addr, prefix_len)` with
/// `prefix_len` counting the [`MAPPING_KEY_FIXED_BITS`] before the address. At most 128 of them
/// (two per bit); empty when `begin >= end`.
pub fn lpm_prefixes(begin: u64, end: u64) -> impl Iterator<Item = (u64, u32)> {
    let mut cur = begin;
    core::iter::from_fn(move || {
        if cur >= end {
            return None;
        }
        // The largest aligned block starting at `cur` that stays below `end`.
        let align = if cur == 0 { 64 } else { cur.trailing_zeros() };
        let mut bits = align.min(63);
        while bits > 0 && (end - cur) < (1u64 << bits) {
            bits -= 1;
        }
        let out = (cur, MAPPING_KEY_FIXED_BITS + 64 - bits);
        cur = cur.checked_add(1u64 << bits).unwrap_or(end);
        Some(out)
    })
}

/// Registers the unwinder tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Regs {
    /// Instruction pointer (RIP).
    pub pc: u64,
    /// Stack pointer (RSP).
    pub sp: u64,
    /// Frame pointer (RBP).
    pub bp: u64,
}

/// Reads user memory (`bpf_probe_read_user` on the BPF side, `/proc/PID/mem` or a core dump on
/// the host).
pub trait Memory {
    /// The little-endian `u64` at `addr`, `None` if it cannot be read.
    fn read_u64(&mut self, addr: u64) -> Option<u64>;
}

/// Finds the row governing a pc (through the mapping trie, the page index and
/// [`search_page`] on the BPF side; `pyro_unwind::Table::lookup` on the host).
pub trait RowLookup {
    /// The row for `pc` (already adjusted: `pc - 1` for a return address), `None` if no table
    /// covers it.
    fn lookup(&self, pc: u64) -> Option<Row>;
}

/// The caller's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's registers.
    pub regs: Regs,
    /// `true` when `regs.pc` is an interrupted pc (after a signal frame), to be looked up as is;
    /// `false` for a return address, looked up at `pc - 1`.
    pub pc_is_exact: bool,
}

/// Outcome of one frame step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The caller's frame.
    Caller(Caller),
    /// The outermost frame ([`CfaType::Stop`]): the stack is complete.
    Stop,
    /// No table covers the pc, or an END row: the caller cannot be found from tables (the BPF
    /// side tries the frame pointer).
    NoInfo,
    /// An UNSUPPORTED (or unknown) row (the BPF side tries the frame pointer).
    Unsupported,
    /// A memory read failed.
    ReadFailed,
    /// The computed return address is 0: the stack ends (some runtimes end it so).
    ZeroReturn,
}

/// The pc to look a frame up at: the pc itself for the sampled frame and after a signal frame,
/// `pc - 1` for a return address (so a call as the last instruction of a function finds that
/// function's row, not the next one's).
#[inline(always)]
pub fn lookup_pc(pc: u64, pc_is_exact: bool) -> u64 {
    if pc_is_exact { pc } else { pc.wrapping_sub(1) }
}

/// One frame step, exactly as the BPF unwinder takes it: look the row up at
/// [`lookup_pc`]`(regs.pc, pc_is_exact)` and apply it with [`apply_row`].
#[inline(always)]
pub fn step<L: RowLookup, M: Memory>(
    regs: &Regs,
    pc_is_exact: bool,
    rows: &L,
    mem: &mut M,
) -> Step {
    let pc = lookup_pc(regs.pc, pc_is_exact);
    match rows.lookup(pc) {
        Some(row) => apply_row(regs, &row, mem),
        None => Step::NoInfo,
    }
}

/// Applies `row` (the row found for `regs.pc`) to `regs`: CFA from RSP/RBP + offset (or the PLT
/// and deref forms; the PLT forms test the pc itself, as their DWARF expression reads RIP),
/// return address at CFA - 8, caller RSP = CFA, RBP restored from CFA + offset.
#[inline(always)]
pub fn apply_row<M: Memory>(regs: &Regs, row: &Row, mem: &mut M) -> Step {
    let pc = regs.pc;
    let cfa = match row.cfa() {
        Some(CfaType::RspOffset) => regs.sp.wrapping_add(row.cfa_offset as u64),
        Some(CfaType::RbpOffset) => regs.bp.wrapping_add(row.cfa_offset as u64),
        Some(CfaType::Plt1) => regs.sp.wrapping_add(if pc & 15 >= 11 { 16 } else { 8 }),
        Some(CfaType::Plt2) => regs.sp.wrapping_add(if pc & 15 >= 10 { 16 } else { 8 }),
        Some(t @ (CfaType::DerefRsp | CfaType::DerefRbp)) => {
            let base = if t == CfaType::DerefRsp {
                regs.sp
            } else {
                regs.bp
            };
            match mem.read_u64(base.wrapping_add(row.deref_offset() as u64)) {
                Some(v) => v.wrapping_add(row.deref_addend()),
                None => return Step::ReadFailed,
            }
        }
        Some(CfaType::Signal) => return signal_step(regs, mem),
        Some(CfaType::Stop) => return Step::Stop,
        Some(CfaType::End) => return Step::NoInfo,
        Some(CfaType::Unsupported) | None => return Step::Unsupported,
    };
    let Some(ra) = mem.read_u64(cfa.wrapping_sub(8)) else {
        return Step::ReadFailed;
    };
    let bp = match row.rbp_type {
        t if t == RbpType::CfaOffset as u8 => {
            match mem.read_u64(cfa.wrapping_add(row.rbp_offset as i64 as u64)) {
                Some(v) => v,
                None => return Step::ReadFailed,
            }
        }
        t if t == RbpType::Undefined as u8 => 0,
        t if t == RbpType::Unchanged as u8 => regs.bp,
        _ => return Step::Unsupported,
    };
    if ra == 0 {
        return Step::ZeroReturn;
    }
    Step::Caller(Caller {
        regs: Regs {
            pc: ra,
            sp: cfa,
            bp,
        },
        pc_is_exact: false,
    })
}

/// The step through a signal trampoline: the interrupted registers from the `ucontext` at RSP.
#[inline(always)]
fn signal_step<M: Memory>(regs: &Regs, mem: &mut M) -> Step {
    let (Some(pc), Some(sp), Some(bp)) = (
        mem.read_u64(regs.sp.wrapping_add(UCONTEXT_RIP)),
        mem.read_u64(regs.sp.wrapping_add(UCONTEXT_RSP)),
        mem.read_u64(regs.sp.wrapping_add(UCONTEXT_RBP)),
    ) else {
        return Step::ReadFailed;
    };
    Step::Caller(Caller {
        regs: Regs { pc, sp, bp },
        pc_is_exact: true,
    })
}

/// The frame-pointer step (mappings of kind [`MappingKind::FramePointer`], and the fallback):
/// caller RBP = *(RBP), return address = *(RBP + 8), caller RSP = RBP + 16.
#[inline(always)]
pub fn frame_pointer_step<M: Memory>(regs: &Regs, mem: &mut M) -> Step {
    if regs.bp == 0 {
        return Step::Stop;
    }
    let (Some(bp), Some(ra)) = (mem.read_u64(regs.bp), mem.read_u64(regs.bp.wrapping_add(8)))
    else {
        return Step::ReadFailed;
    };
    if ra == 0 {
        return Step::ZeroReturn;
    }
    Step::Caller(Caller {
        regs: Regs {
            pc: ra,
            sp: regs.bp.wrapping_add(16),
            bp,
        },
        pc_is_exact: false,
    })
}

/// Reads row `index` of one file's row array (`bpf_map_lookup_elem` on the inner array on the
/// BPF side, a slice on the host).
pub trait RowArray {
    /// Row `index`, `None` past the end.
    fn row(&self, index: u32) -> Option<Row>;

    /// `v` (the search's `lo`) unchanged, passed through memory the verifier cannot see into on the BPF side, so
    /// that the search's loop states do not differ by exact bounds of `lo`/`hi` and are pruned
    /// (without it the 16 steps explode past the verifier's limit). Identity on the host.
    #[inline(always)]
    fn opaque_lo(&self, v: u32) -> u32 {
        v
    }

    /// As [`RowArray::opaque_lo`], for `hi`.
    #[inline(always)]
    fn opaque_hi(&self, v: u32) -> u32 {
        v
    }
}

impl RowArray for [Row] {
    #[inline(always)]
    fn row(&self, index: u32) -> Option<Row> {
        self.get(index as usize).copied()
    }
}

/// The index of the row governing in-page pc `pc_low` of a page whose index entry is `page`:
/// the last row at or before it, found in ≤ [`SEARCH_STEPS`] steps. That is `page.first - 1`,
/// the last row of an earlier page, when `pc_low` is before the page's first row (or the page is
/// empty); `None` when no row precedes it at all, or a read fails.
#[inline(always)]
pub fn search_page<A: RowArray + ?Sized>(rows: &A, page: &PageValue, pc_low: u16) -> Option<u32> {
    let mut lo: u32 = 0;
    let mut hi: u32 = if page.count > MAX_PAGE_ROWS {
        MAX_PAGE_ROWS
    } else {
        page.count
    };
    // Invariant: rows [first, first+lo) are <= pc_low, rows [first+hi, first+count) are > it.
    let mut i = 0;
    while i < SEARCH_STEPS {
        lo = rows.opaque_lo(lo);
        hi = rows.opaque_hi(hi);
        if lo < hi {
            let mid = lo + (hi - lo) / 2;
            let row = rows.row(page.first.wrapping_add(mid))?;
            if row.pc_low <= pc_low {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        i += 1;
    }
    let index = page.first.wrapping_add(lo);
    if index == 0 { None } else { Some(index - 1) }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]` plain integers without padding (sizes asserted).
    unsafe impl aya::Pod for super::Row {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MappingKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Mapping {}
    // SAFETY: as above (`SampleRecord` is a multiple of 8 bytes; two u32 end it).
    unsafe impl aya::Pod for super::UnwindState {}
}

const _: () = assert!(core::mem::size_of::<PageKey>() == 16);
const _: () = assert!(core::mem::size_of::<PageValue>() == 8);
const _: () = assert!(core::mem::size_of::<MappingKey>() == 16);
const _: () = assert!(core::mem::size_of::<Mapping>() == 40);

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pcs: &[u16]) -> [Row; 8] {
        let mut out = [Row::default(); 8];
        for (i, pc) in pcs.iter().enumerate() {
            out[i] = Row::command(*pc, CfaType::RspOffset);
        }
        out
    }

    #[test]
    fn search_finds_last_row_at_or_before() {
        // Page 0 holds rows 0..3 (pc 0x10, 0x20, 0x30); page 1 holds rows 3..5.
        let r = rows(&[0x10, 0x20, 0x30, 0x5, 0x100]);
        let p0 = PageValue { first: 0, count: 3 };
        let p1 = PageValue { first: 3, count: 2 };
        assert_eq!(search_page(&r[..5], &p0, 0x0f), None);
        assert_eq!(search_page(&r[..5], &p0, 0x10), Some(0));
        assert_eq!(search_page(&r[..5], &p0, 0x2f), Some(1));
        assert_eq!(search_page(&r[..5], &p0, 0xffff), Some(2));
        // Before the first row of page 1: the last row of page 0.
        assert_eq!(search_page(&r[..5], &p1, 0x4), Some(2));
        assert_eq!(search_page(&r[..5], &p1, 0x5), Some(3));
        assert_eq!(search_page(&r[..5], &p1, 0x100), Some(4));
        // An empty page between: the row before it.
        assert_eq!(
            search_page(&r[..5], &PageValue { first: 5, count: 0 }, 7),
            Some(4)
        );
    }

    #[test]
    fn sixteen_steps_cover_a_full_page() {
        extern crate std;
        let all: std::vec::Vec<Row> = (0..MAX_PAGE_ROWS)
            .map(|pc| Row::command(pc as u16, CfaType::RspOffset))
            .collect();
        let page = PageValue {
            first: 0,
            count: MAX_PAGE_ROWS,
        };
        for pc in 0..=u16::MAX {
            let want = if u32::from(pc) < MAX_PAGE_ROWS {
                pc as u32
            } else {
                MAX_PAGE_ROWS - 1
            };
            assert_eq!(search_page(&all[..], &page, pc), Some(want), "pc {pc}");
        }
    }

    #[test]
    fn lpm_prefixes_cover_exactly() {
        for &(b, e) in &[
            (0x1000u64, 0x3000u64),
            (0x1001, 0x1fff),
            (0, 1),
            (5, 6),
            (0x40_0000, 0x40_1234),
        ] {
            let mut next = b;
            for (addr, len) in lpm_prefixes(b, e) {
                assert_eq!(addr, next);
                let bits = 64 + MAPPING_KEY_FIXED_BITS - len;
                assert_eq!(addr & ((1u64 << bits) - 1), 0, "aligned");
                next = addr + (1u64 << bits);
            }
            assert_eq!(next, e);
        }
        assert_eq!(lpm_prefixes(10, 10).count(), 0);
    }

    #[test]
    fn deref_packing_round_trips() {
        let packed = Row::pack_deref(-8, 16).unwrap();
        let row = Row {
            cfa_type: CfaType::DerefRbp as u8,
            cfa_offset: packed,
            ..Row::default()
        };
        assert_eq!((row.deref_offset(), row.deref_addend()), (-8, 16));
        assert_eq!(Row::pack_deref(4, 0), None);
        assert_eq!(Row::pack_deref(8 * 200, 0), None);
    }

    struct Mem;
    impl Memory for Mem {
        fn read_u64(&mut self, addr: u64) -> Option<u64> {
            Some(addr ^ 0xabcd)
        }
    }

    #[test]
    fn plt_rows_follow_pc() {
        let regs = Regs {
            pc: 0,
            sp: 0x1000,
            bp: 7,
        };
        for (pc, cfa) in [
            (0x20u64, 0x1008u64),
            (0x2a, 0x1008),
            (0x2b, 0x1010),
            (0x2f, 0x1010),
        ] {
            let regs = Regs { pc, ..regs };
            let Step::Caller(c) = apply_row(&regs, &Row::command(0, CfaType::Plt1), &mut Mem)
            else {
                panic!()
            };
            assert_eq!(
                (c.regs.sp, c.regs.pc, c.regs.bp),
                (cfa, (cfa - 8) ^ 0xabcd, 7)
            );
        }
    }

    #[test]
    fn signal_rows_read_the_ucontext() {
        let regs = Regs {
            pc: 0,
            sp: 0x1000,
            bp: 7,
        };
        let Step::Caller(c) = apply_row(&regs, &Row::command(0, CfaType::Signal), &mut Mem) else {
            panic!()
        };
        assert!(c.pc_is_exact);
        assert_eq!(c.regs.pc, (0x1000 + 168) ^ 0xabcd);
        assert_eq!(c.regs.sp, (0x1000 + 160) ^ 0xabcd);
        assert_eq!(c.regs.bp, (0x1000 + 120) ^ 0xabcd);
    }
}
