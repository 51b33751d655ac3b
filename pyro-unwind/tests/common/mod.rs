//! Shared by the integration tests: the fixture files and gimli as the oracle.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::PathBuf;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EndianSlice, Evaluation, EvaluationResult, LittleEndian,
    Location, Register, RegisterRule, UnwindContext, UnwindSection, UnwindTableRow, Value, X86_64,
};
use object::{Object, ObjectSection};
use pyro_ebpf_common::unwind::{Memory, Regs, Step, apply_row};
use pyro_unwind::{CfaType, Table};

/// An FDE and its address range, cut where the next FDE starts.
pub(crate) type Fde<'a> = (
    u64,
    u64,
    gimli::FrameDescriptionEntry<EndianSlice<'a, LittleEndian>>,
);

pub(crate) const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
pub(crate) const LIBSTDCXX: &str = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";

/// A file that must exist (installed by `.ci/run`): missing is a failure.
pub(crate) fn fixture(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing (apt-get install libc6 libstdc++6)"
    );
    p
}

/// The binary over 50 MB: `librustc_driver-*.so` of the toolchain building this test.
pub(crate) fn big_binary() -> PathBuf {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output();
    let sysroot = String::from_utf8(out.expect("rustc runs").stdout).expect("utf-8");
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let found = std::fs::read_dir(&lib)
        .expect("sysroot lib")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("librustc_driver-") && n.ends_with(".so"))
        })
        .expect("librustc_driver-*.so in the toolchain's sysroot");
    let len = std::fs::metadata(&found).expect("stat").len();
    assert!(len > 50 << 20, "{} is only {len} bytes", found.display());
    found
}

/// Deterministic stand-in for memory: every address reads as a distinct value.
pub(crate) fn mem(addr: u64) -> u64 {
    let mut z = addr.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) const SP0: u64 = 0x7ffd_0000_1000;
pub(crate) const BP0: u64 = 0x7ffd_0000_8000;

/// Register values of the synthetic state: RSP, RBP and RIP as given, the others distinct.
pub(crate) fn reg(r: Register, pc: u64) -> u64 {
    match r {
        X86_64::RSP => SP0,
        X86_64::RBP => BP0,
        X86_64::RA => pc,
        Register(n) => 0x1111_0000 + u64::from(n) * 8,
    }
}

/// What gimli says the caller's frame is for a row at `pc`, evaluated on the synthetic state:
/// `Some((pc, sp, bp))`, or `None` when the return address is undefined (outermost frame).
/// `Err` when gimli itself cannot evaluate it.
pub(crate) type Expected = Result<Option<(u64, u64, u64)>, String>;

pub(crate) fn expected<'a, S: UnwindSection<EndianSlice<'a, LittleEndian>>>(
    section: &S,
    row: &UnwindTableRow<usize>,
    pc: u64,
) -> Expected {
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            reg(*register, pc).wrapping_add(*offset as u64)
        }
        CfaRule::Expression(e) => {
            let expr = e.get(section).map_err(|e| e.to_string())?;
            eval(expr, None, pc)?
        }
    };
    let rule = |r: Register, default: u64| -> Result<Option<u64>, String> {
        Ok(Some(match row.register(r) {
            None | Some(RegisterRule::SameValue) => default,
            Some(RegisterRule::Undefined) => return Ok(None),
            Some(RegisterRule::Offset(n)) => mem(cfa.wrapping_add(n as u64)),
            Some(RegisterRule::ValOffset(n)) => cfa.wrapping_add(n as u64),
            Some(RegisterRule::Register(o)) => reg(o, pc),
            Some(RegisterRule::Expression(e)) => mem(eval(
                e.get(section).map_err(|e| e.to_string())?,
                Some(cfa),
                pc,
            )?),
            Some(RegisterRule::ValExpression(e)) => {
                eval(e.get(section).map_err(|e| e.to_string())?, Some(cfa), pc)?
            }
            Some(other) => return Err(format!("rule {other:?}")),
        }))
    };
    let Some(ra) = (match row.register(X86_64::RA) {
        None => return Err("no return-address rule".into()),
        _ => rule(X86_64::RA, pc)?,
    }) else {
        return Ok(None);
    };
    let sp = rule(X86_64::RSP, cfa)?.unwrap_or(cfa);
    let bp = rule(X86_64::RBP, BP0)?.unwrap_or(0);
    Ok(Some((ra, sp, bp)))
}

/// GNU ld's CFA expression for `.plt` entries: `DW_OP_breg7 (rsp): 8; DW_OP_breg16 (rip): 0;
/// DW_OP_lit15; DW_OP_and; DW_OP_lit11; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`.
pub(crate) const LD_PLT_EXPRESSION: [u8; 11] = [
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];

/// Evaluates DWARF expression bytes with gimli on the synthetic state.
pub(crate) fn eval_bytes(bytes: &[u8], pc: u64) -> u64 {
    eval(
        gimli::Expression(EndianSlice::new(bytes, LittleEndian)),
        None,
        pc,
    )
    .expect("evaluates")
}

fn eval(
    expr: gimli::Expression<EndianSlice<'_, LittleEndian>>,
    initial: Option<u64>,
    pc: u64,
) -> Result<u64, String> {
    let encoding = gimli::Encoding {
        address_size: 8,
        format: gimli::Format::Dwarf32,
        version: 4,
    };
    let mut ev: Evaluation<_> = expr.evaluation(encoding);
    if let Some(v) = initial {
        ev.set_initial_value(v);
    }
    let mut state = ev.evaluate().map_err(|e| e.to_string())?;
    loop {
        state = match state {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresRegister { register, .. } => ev
                .resume_with_register(Value::Generic(reg(register, pc)))
                .map_err(|e| e.to_string())?,
            EvaluationResult::RequiresMemory { address, .. } => ev
                .resume_with_memory(Value::Generic(mem(address)))
                .map_err(|e| e.to_string())?,
            other => return Err(format!("{other:?}")),
        };
    }
    let pieces = ev.result();
    match pieces.first().map(|p| &p.location) {
        Some(Location::Address { address }) => Ok(*address),
        Some(Location::Value { value }) => value.to_u64(!0).map_err(|e| e.to_string()),
        other => Err(format!("{other:?}")),
    }
}

/// Every FDE of the file's `.eh_frame`, found through the `.eh_frame_hdr` search table (the
/// path libgcc takes, not the builder's linear walk), sorted by address and cut where the next
/// one starts: `(start, end, fde)`.
pub(crate) struct Oracle<'a> {
    pub(crate) eh_frame: EhFrame<EndianSlice<'a, LittleEndian>>,
    pub(crate) bases: BaseAddresses,
    pub(crate) fdes: Vec<(
        u64,
        u64,
        gimli::FrameDescriptionEntry<EndianSlice<'a, LittleEndian>>,
    )>,
}

impl<'a> Oracle<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        let file = object::File::parse(data).expect("ELF");
        let eh = file.section_by_name(".eh_frame").expect(".eh_frame");
        let hdr = file
            .section_by_name(".eh_frame_hdr")
            .expect(".eh_frame_hdr");
        let bases = BaseAddresses::default()
            .set_eh_frame(eh.address())
            .set_eh_frame_hdr(hdr.address())
            .set_text(file.section_by_name(".text").expect(".text").address());
        let mut eh_frame = EhFrame::new(eh.data().expect("data"), LittleEndian);
        eh_frame.set_address_size(8);
        let parsed = gimli::EhFrameHdr::new(hdr.data().expect("data"), LittleEndian)
            .parse(&bases, 8)
            .expect("hdr");
        let table = parsed.table().expect("search table");
        let mut iter = table.iter(&bases);
        let mut fdes = Vec::new();
        while let Some((_, ptr)) = iter.next().expect("hdr entry") {
            let offset = table.pointer_to_offset(ptr).expect("fde pointer");
            let fde = eh_frame
                .fde_from_offset(&bases, offset, EhFrame::cie_from_offset)
                .expect("fde");
            if fde.len() > 0 {
                fdes.push((fde.initial_address(), fde.end_address(), fde));
            }
        }
        cut_overlaps(&mut fdes);
        Oracle {
            eh_frame,
            bases,
            fdes,
        }
    }
}

/// Sorts FDEs by address and cuts each where the next one starts.
pub(crate) fn cut_overlaps(fdes: &mut [Fde<'_>]) {
    fdes.sort_by_key(|f| (f.0, f.1));
    for i in 0..fdes.len().saturating_sub(1) {
        let next = fdes[i + 1].0;
        if fdes[i].1 > next {
            fdes[i].1 = next;
        }
    }
}

struct Synthetic;
impl Memory for Synthetic {
    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        Some(mem(addr))
    }
}

/// What one check saw.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) addresses: u64,
    pub(crate) unsupported_addresses: u64,
    pub(crate) gimli_cannot: u64,
    pub(crate) gap_addresses: u64,
    pub(crate) signal_addresses: u64,
    pub(crate) plt_addresses: u64,
}

/// The PLT sections of a file: `(name, begin, end)`.
pub(crate) fn plt_sections(data: &[u8]) -> Vec<(&'static str, u64, u64)> {
    let file = object::File::parse(data).expect("ELF");
    [".plt", ".plt.got", ".plt.sec"]
        .into_iter()
        .filter_map(|n| {
            file.section_by_name(n)
                .map(|s| (n, s.address(), s.address() + s.size()))
        })
        .collect()
}

/// A PLT address no FDE covers: our synthesised row must give what GNU ld's own `.plt` CFI
/// gives (evaluated by gimli): CFA = RSP + 16 at PLT0 (entered with the index pushed), + 24
/// after PLT0's push, then ld's expression `rsp + 8 + ((rip & 15) >= 11) * 8` for the entries
/// of `.plt`, and RSP + 8 in `.plt.got`/`.plt.sec` (a lone `jmp`).
fn check_synthesised_plt(table: &Table, pc: u64, (name, plt, _): (&str, u64, u64)) {
    let row = table.lookup(pc).expect("a synthesised PLT row");
    let cfa = if name != ".plt" {
        SP0 + 8
    } else if pc < plt + 6 {
        SP0 + 16
    } else if pc < plt + 16 {
        SP0 + 24
    } else {
        eval_bytes(&LD_PLT_EXPRESSION, pc)
    };
    let got = apply_row(
        &Regs {
            pc,
            sp: SP0,
            bp: BP0,
        },
        &row,
        &mut Synthetic,
    );
    let Step::Caller(c) = got else {
        panic!("{pc:#x}: {row:?} gives {got:?}")
    };
    assert_eq!(
        (c.regs.sp, c.regs.pc, c.regs.bp),
        (cfa, mem(cfa - 8), BP0),
        "{pc:#x}: {row:?}"
    );
}

/// Checks `table` at every address of `fdes` (sorted, cut where the next starts) against
/// gimli's rows, and every address in the gaps between them.
pub(crate) fn check<'a, S: UnwindSection<EndianSlice<'a, LittleEndian>>>(
    name: &str,
    table: &Table,
    section: &S,
    bases: &BaseAddresses,
    fdes: &[Fde<'a>],
    plts: &[(&'static str, u64, u64)],
) -> Counts {
    let mut ctx = Box::new(UnwindContext::new());
    let mut counts = Counts::default();
    let mut mismatches = Vec::new();
    let mut prev_end = None;
    for (start, end, fde) in fdes {
        // Gaps since the previous FDE: no unwind information.
        if let Some(p) = prev_end {
            for a in p..*start {
                if plts.iter().any(|&(_, b, e)| a >= b && a < e) {
                    continue; // checked below
                }
                counts.gap_addresses += 1;
                let row = table.lookup(a);
                assert!(
                    row.is_none_or(|r| r.cfa() == Some(CfaType::End)),
                    "{name}: gap address {a:#x} has row {row:?}"
                );
            }
        }
        prev_end = Some(*end);
        let signal = fde.is_signal_trampoline();
        let mut rows = fde.rows(section, bases, &mut ctx).expect("rows");
        while let Some(row) = rows.next_row().expect("row") {
            let (rs, re) = (row.start_address().max(*start), row.end_address().min(*end));
            // Rules that read no RIP give the same answer at every address of the row.
            let pc_free = !matches!(row.cfa(), CfaRule::Expression(_))
                && row.registers().all(|(_, r)| {
                    !matches!(
                        r,
                        RegisterRule::Expression(_)
                            | RegisterRule::ValExpression(_)
                            | RegisterRule::Register(X86_64::RA)
                    )
                });
            let mut cached: Option<Expected> = None;
            for pc in rs..re {
                counts.addresses += 1;
                let want = match (&cached, pc_free) {
                    (Some(w), true) => w.clone(),
                    _ => {
                        let w = expected(section, row, pc);
                        cached = Some(w.clone());
                        w
                    }
                };
                let Some(ours) = table.lookup(pc) else {
                    mismatches.push(format!("{pc:#x}: no row, gimli {want:?}"));
                    continue;
                };
                let got = apply_row(
                    &Regs {
                        pc,
                        sp: SP0,
                        bp: BP0,
                    },
                    &ours,
                    &mut Synthetic,
                );
                let ok = match (&got, &want) {
                    (Step::Unsupported, _) => {
                        counts.unsupported_addresses += 1;
                        true
                    }
                    (_, Err(_)) => {
                        counts.gimli_cannot += 1;
                        false
                    }
                    (Step::Stop, Ok(None)) => true,
                    (Step::Caller(c), Ok(Some((wpc, wsp, wbp)))) => {
                        if signal {
                            counts.signal_addresses += 1;
                        }
                        (c.regs.pc, c.regs.sp, c.regs.bp) == (*wpc, *wsp, *wbp)
                            && c.pc_is_exact == signal
                    }
                    _ => false,
                };
                if !ok && mismatches.len() < 20 {
                    mismatches.push(format!("{pc:#x}: ours {ours:?} → {got:?}, gimli {want:?}"));
                }
            }
        }
    }
    for &plt @ (_, b, e) in plts {
        for a in b..e {
            let i = fdes.partition_point(|f| f.0 <= a);
            if i == 0 || fdes[i - 1].1 <= a {
                counts.plt_addresses += 1;
                check_synthesised_plt(table, a, plt);
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{name}: mismatches, first: {mismatches:#?}"
    );
    counts
}

/// Prints what a check saw, and asserts what holds for any real file.
pub(crate) fn report(name: &str, table: &Table, counts: &Counts) {
    let s = table.stats();
    println!(
        "{name}: {} addresses checked ({} in gaps, {} in synthesised PLT rows), {} unsupported \
         ({:.4} %), {} in signal frames; table {} rows ({} unsupported, {} END), {} pages, {} \
         bytes, {} FDEs ({} overlapping, {} bad, {} outside text), {} PLT sections synthesised",
        counts.addresses,
        counts.gap_addresses,
        counts.plt_addresses,
        counts.unsupported_addresses,
        100.0 * counts.unsupported_addresses as f64 / counts.addresses.max(1) as f64,
        counts.signal_addresses,
        s.rows,
        s.unsupported_rows,
        s.end_rows,
        s.pages,
        s.bytes,
        s.fdes,
        s.overlapping_fdes,
        s.bad_fdes,
        s.outside_text_fdes,
        s.plt_sections,
    );
    assert_eq!(counts.gimli_cannot, 0);
    assert_eq!(s.bad_fdes, 0, "{name}: no FDE of a real file is malformed");
    // Real files are overwhelmingly followable; a converter that gave up would fail here.
    assert!(
        counts.unsupported_addresses * 1000 < counts.addresses,
        "{name}: too many unsupported"
    );
}
