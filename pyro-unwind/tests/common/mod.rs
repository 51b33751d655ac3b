//! Shared by the integration tests: the fixture files and gimli as the oracle.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::PathBuf;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EndianSlice, Evaluation, EvaluationResult, LittleEndian,
    Location, Register, RegisterRule, UnwindContext, UnwindSection, UnwindTableRow, Value, X86_64,
};
use object::{Object, ObjectSection};

pub const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
pub const LIBSTDCXX: &str = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";

/// A file that must exist (installed by `.ci/run`): missing is a failure.
pub fn fixture(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing (apt-get install libc6 libstdc++6)"
    );
    p
}

/// The binary over 50 MB: `librustc_driver-*.so` of the toolchain building this test.
pub fn big_binary() -> PathBuf {
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
pub fn mem(addr: u64) -> u64 {
    let mut z = addr.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub const SP0: u64 = 0x7ffd_0000_1000;
pub const BP0: u64 = 0x7ffd_0000_8000;

/// Register values of the synthetic state: RSP, RBP and RIP as given, the others distinct.
pub fn reg(r: Register, pc: u64) -> u64 {
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
pub type Expected = Result<Option<(u64, u64, u64)>, String>;

pub fn expected<'a, S: UnwindSection<EndianSlice<'a, LittleEndian>>>(
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
pub const LD_PLT_EXPRESSION: [u8; 11] = [
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];

/// Evaluates DWARF expression bytes with gimli on the synthetic state.
pub fn eval_bytes(bytes: &[u8], pc: u64) -> u64 {
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
pub struct Oracle<'a> {
    pub eh_frame: EhFrame<EndianSlice<'a, LittleEndian>>,
    pub bases: BaseAddresses,
    pub fdes: Vec<(
        u64,
        u64,
        gimli::FrameDescriptionEntry<EndianSlice<'a, LittleEndian>>,
    )>,
}

impl<'a> Oracle<'a> {
    pub fn new(data: &'a [u8]) -> Self {
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
        fdes.sort_by_key(|f| (f.0, f.1));
        for i in 0..fdes.len().saturating_sub(1) {
            let next = fdes[i + 1].0;
            if fdes[i].1 > next {
                fdes[i].1 = next;
            }
        }
        Oracle {
            eh_frame,
            bases,
            fdes,
        }
    }

    pub fn context() -> Box<UnwindContext<usize>> {
        Box::new(UnwindContext::new())
    }
}
