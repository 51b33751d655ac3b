//! From one ELF file's CFI to the flat list of `(address, rule)` rows: finding the CFI
//! (`.eh_frame`, `PT_GNU_EH_FRAME`, `.debug_frame`), walking its FDEs with gimli, converting each
//! gimli row to the rules the BPF unwinder follows, and synthesising rows for PLT sections no FDE
//! covers.

use std::borrow::Cow;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EndianSlice, LittleEndian, Operation, Reader, RegisterRule,
    UnwindContext, UnwindExpression, UnwindSection, UnwindTableRow, X86_64,
};
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSection};
use pyro_ebpf_common::unwind::{CfaType, RbpType, Row, UCONTEXT_RBP, UCONTEXT_RIP, UCONTEXT_RSP};

use crate::{CfiSource, Error};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// The rows of one FDE (or one synthesised PLT range), before sorting and merging.
#[derive(Debug, Clone)]
pub(crate) struct FdeSpan {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Range into [`Collected::rows`].
    pub(crate) rows: std::ops::Range<usize>,
}

/// What the walk of one file's CFI produced.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) spans: Vec<FdeSpan>,
    /// `(address, rule)`; the rule's `pc_low` is not set yet.
    pub(crate) rows: Vec<(u64, Row)>,
    pub(crate) bad_fdes: u64,
    pub(crate) outside_text_fdes: u64,
    pub(crate) plt_sections: u64,
    pub(crate) source: Option<CfiSource>,
}

/// A section's address and (decompressed) bytes.
type SectionBytes<'d> = Option<(u64, Cow<'d, [u8]>)>;

/// An executable `PT_LOAD` range `[begin, end)` (virtual addresses).
type TextRange = (u64, u64);

pub(crate) fn collect(data: &[u8]) -> Result<Collected, Error> {
    let file = ElfFile64::<object::LittleEndian>::parse(data).map_err(Error::Elf)?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(Error::Architecture(file.architecture()));
    }
    let endian = file.endian();
    let headers = file
        .elf_header()
        .program_headers(endian, data)
        .unwrap_or(&[]);
    let text: Vec<TextRange> = headers
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD && ph.p_flags(endian) & elf::PF_X != 0)
        .filter_map(|ph| {
            let begin = ph.p_vaddr(endian);
            Some((begin, begin.checked_add(ph.p_memsz(endian))?))
        })
        .collect();

    let mut out = Collected::default();
    let section_data = |name: &'static str| -> Result<SectionBytes<'_>, Error> {
        match file.section_by_name(name) {
            Some(s) if s.kind() != object::SectionKind::UninitializedData => {
                let bytes = s.uncompressed_data().map_err(|source| Error::Section {
                    section: name,
                    source,
                })?;
                Ok(Some((s.address(), bytes)))
            }
            _ => Ok(None),
        }
    };

    // With section headers: `.eh_frame`, else `.debug_frame`. Without (stripped, or a file
    // `objcopy` left with a dangling `PT_GNU_EH_FRAME`): `PT_GNU_EH_FRAME` → `.eh_frame_hdr`.
    let text_address = file.section_by_name(".text").map(|s| s.address());
    let has_sections = file.sections().next().is_some();
    if let Some((addr, bytes)) = section_data(".eh_frame")? {
        let mut bases = BaseAddresses::default().set_eh_frame(addr);
        if let Some(t) = text_address {
            bases = bases.set_text(t);
        }
        if let Some(hdr) = file.section_by_name(".eh_frame_hdr") {
            bases = bases.set_eh_frame_hdr(hdr.address());
        }
        let mut section = gimli::EhFrame::new(&bytes, LittleEndian);
        section.set_address_size(8);
        walk(&section, ".eh_frame", &bases, &text, &mut out)?;
        out.source = Some(CfiSource::EhFrame);
    } else if let Some((_, bytes)) = section_data(".debug_frame")? {
        let mut section = gimli::DebugFrame::new(&bytes, LittleEndian);
        section.set_address_size(8);
        walk(
            &section,
            ".debug_frame",
            &BaseAddresses::default(),
            &text,
            &mut out,
        )?;
        out.source = Some(CfiSource::DebugFrame);
    } else if let Some((hdr_addr, hdr_bytes)) =
        program_header_eh_frame_hdr(headers, endian, data).filter(|_| !has_sections)
    {
        let (eh_addr, eh_bytes) = eh_frame_from_hdr(hdr_addr, hdr_bytes, headers, endian, data)?;
        let bases = BaseAddresses::default()
            .set_eh_frame(eh_addr)
            .set_eh_frame_hdr(hdr_addr);
        let mut section = gimli::EhFrame::new(eh_bytes, LittleEndian);
        section.set_address_size(8);
        walk(&section, ".eh_frame", &bases, &text, &mut out)?;
        out.source = Some(CfiSource::EhFrameProgramHeader);
    } else {
        return Err(Error::NoUnwindInfo);
    }

    add_plt_sections(&file, &mut out);
    Ok(out)
}

/// `PT_GNU_EH_FRAME`: the `.eh_frame_hdr` address and bytes.
fn program_header_eh_frame_hdr<'d>(
    headers: &[elf::ProgramHeader64<object::LittleEndian>],
    endian: object::LittleEndian,
    data: &'d [u8],
) -> Option<(u64, &'d [u8])> {
    let ph = headers
        .iter()
        .find(|ph| ph.p_type(endian) == elf::PT_GNU_EH_FRAME)?;
    Some((ph.p_vaddr(endian), ph.data(endian, data).ok()?))
}

/// The `.eh_frame` a `.eh_frame_hdr` points to: from its address to the end of the file bytes
/// of the `PT_LOAD` holding it (the walk stops at `.eh_frame`'s zero terminator).
fn eh_frame_from_hdr<'d>(
    hdr_addr: u64,
    hdr: &'d [u8],
    headers: &[elf::ProgramHeader64<object::LittleEndian>],
    endian: object::LittleEndian,
    data: &'d [u8],
) -> Result<(u64, &'d [u8]), Error> {
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let parsed = gimli::EhFrameHdr::new(hdr, LittleEndian)
        .parse(&bases, 8)
        .map_err(|e| Error::EhFrameHdr {
            reason: e.to_string(),
        })?;
    let eh_addr = match parsed.eh_frame_ptr() {
        gimli::Pointer::Direct(a) => a,
        gimli::Pointer::Indirect(_) => {
            return Err(Error::EhFrameHdr {
                reason: "indirect eh_frame_ptr".into(),
            });
        }
    };
    let load = headers
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .find(|ph| {
            let v = ph.p_vaddr(endian);
            eh_addr >= v && eh_addr - v < ph.p_filesz(endian)
        })
        .ok_or_else(|| Error::EhFrameHdr {
            reason: format!("eh_frame_ptr {eh_addr:#x} is in no loaded file range"),
        })?;
    let seg = load.data(endian, data).map_err(|()| Error::EhFrameHdr {
        reason: "the PT_LOAD holding .eh_frame is outside the file".into(),
    })?;
    let skip = usize::try_from(eh_addr - load.p_vaddr(endian)).unwrap_or(usize::MAX);
    let bytes = seg.get(skip..).ok_or_else(|| Error::EhFrameHdr {
        reason: "eh_frame_ptr past its segment".into(),
    })?;
    Ok((eh_addr, bytes))
}

/// Walks every FDE of `section`; an FDE that fails to parse or evaluate is skipped and counted.
fn walk<'a, S>(
    section: &S,
    name: &'static str,
    bases: &BaseAddresses,
    text: &[TextRange],
    out: &mut Collected,
) -> Result<(), Error>
where
    S: UnwindSection<Slice<'a>>,
{
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    let mut first = true;
    loop {
        let entry = match entries.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(source) => {
                // The length of an entry is wrong: nothing after it can be found.
                if first {
                    return Err(Error::Cfi {
                        section: name,
                        offset: 0,
                        source,
                    });
                }
                tracing::debug!(section = name, error = %source, "CFI walk stopped early");
                out.bad_fdes += 1;
                break;
            }
        };
        first = false;
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = match partial.parse(|s, b, o| s.cie_from_offset(b, o)) {
            Ok(f) => f,
            Err(error) => {
                tracing::trace!(section = name, %error, "bad FDE skipped");
                out.bad_fdes += 1;
                continue;
            }
        };
        let start = fde.initial_address();
        let Some(end) = start.checked_add(fde.len()) else {
            out.bad_fdes += 1;
            continue;
        };
        if start >= end {
            continue;
        }
        if !text.is_empty() && !text.iter().any(|&(b, e)| start >= b && end <= e) {
            out.outside_text_fdes += 1;
            continue;
        }
        let signal = fde.is_signal_trampoline();
        let mark = out.rows.len();
        let ok = (|| -> gimli::Result<()> {
            let mut table = fde.rows(section, bases, &mut ctx)?;
            while let Some(row) = table.next_row()? {
                if row.start_address() >= end {
                    break;
                }
                out.rows
                    .push((row.start_address(), convert(row, section, signal)));
            }
            Ok(())
        })();
        match ok {
            Ok(()) => out.spans.push(FdeSpan {
                start,
                end,
                rows: mark..out.rows.len(),
            }),
            Err(error) => {
                tracing::trace!(section = name, %error, start, "FDE with bad instructions skipped");
                out.rows.truncate(mark);
                out.bad_fdes += 1;
            }
        }
    }
    Ok(())
}

/// The rule of one gimli row, as the BPF unwinder follows it (or UNSUPPORTED).
pub(crate) fn convert<'a, S>(row: &UnwindTableRow<usize>, section: &S, signal: bool) -> Row
where
    S: UnwindSection<Slice<'a>>,
{
    let unsupported = Row::command(0, CfaType::Unsupported);
    let expr_ops = |e: &UnwindExpression<usize>| -> Option<Vec<Operation<Slice<'a>>>> {
        let expr = e.get(section).ok()?;
        let encoding = gimli::Encoding {
            address_size: 8,
            format: gimli::Format::Dwarf32,
            version: 4,
        };
        let mut bytes = expr.0;
        let mut ops = Vec::new();
        while !bytes.is_empty() {
            if ops.len() == 16 {
                return None;
            }
            ops.push(Operation::parse(&mut bytes, encoding).ok()?);
        }
        Some(ops)
    };
    // `DW_OP_breg7 (rsp): off` alone: a register saved at rsp + off.
    let at_rsp = |rule: Option<RegisterRule<usize>>, want: u64| -> bool {
        let Some(RegisterRule::Expression(e)) = rule else {
            return false;
        };
        matches!(expr_ops(&e).as_deref(), Some([Operation::RegisterOffset { register, offset, .. }])
            if *register == X86_64::RSP && *offset as u64 == want)
    };

    if signal {
        let ok = at_rsp(row.register(X86_64::RA), UCONTEXT_RIP)
            && at_rsp(row.register(X86_64::RSP), UCONTEXT_RSP)
            && at_rsp(row.register(X86_64::RBP), UCONTEXT_RBP);
        return if ok {
            Row::command(0, CfaType::Signal)
        } else {
            unsupported
        };
    }
    match row.register(X86_64::RA) {
        Some(RegisterRule::Offset(-8)) => {}
        Some(RegisterRule::Undefined) => return Row::command(0, CfaType::Stop),
        _ => return unsupported,
    }
    // The caller's RSP must be the CFA.
    match row.register(X86_64::RSP) {
        None | Some(RegisterRule::ValOffset(0)) => {}
        _ => return unsupported,
    }
    let (cfa_type, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let t = match *register {
                X86_64::RSP => CfaType::RspOffset,
                X86_64::RBP => CfaType::RbpOffset,
                _ => return unsupported,
            };
            match u16::try_from(*offset) {
                Ok(off) => (t, off),
                Err(_) => return unsupported,
            }
        }
        CfaRule::Expression(e) => match expr_ops(e).as_deref().and_then(classify_cfa_expression) {
            Some(v) => v,
            None => return unsupported,
        },
    };
    let (rbp_type, rbp_offset) = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => (RbpType::Unchanged, 0),
        Some(RegisterRule::Undefined) => (RbpType::Undefined, 0),
        Some(RegisterRule::Offset(off)) => match i16::try_from(off) {
            Ok(off) => (RbpType::CfaOffset, off),
            Err(_) => return unsupported,
        },
        Some(_) => return unsupported,
    };
    Row {
        pc_low: 0,
        cfa_type: cfa_type as u8,
        rbp_type: rbp_type as u8,
        cfa_offset,
        rbp_offset,
    }
}

/// The CFA expressions the BPF side follows: GNU ld's two `.plt` expressions and
/// `*(rsp|rbp + off) [+ k]`.
fn classify_cfa_expression<R: Reader>(ops: &[Operation<R>]) -> Option<(CfaType, u16)> {
    use Operation as Op;
    match ops {
        [
            Op::RegisterOffset {
                register: X86_64::RSP,
                offset: 8,
                ..
            },
            Op::RegisterOffset {
                register: X86_64::RA,
                offset: 0,
                ..
            },
            Op::UnsignedConstant { value: 15 },
            Op::And,
            Op::UnsignedConstant { value: threshold },
            Op::Ge,
            Op::UnsignedConstant { value: 3 },
            Op::Shl,
            Op::Plus,
        ] => match threshold {
            11 => Some((CfaType::Plt1, 0)),
            10 => Some((CfaType::Plt2, 0)),
            _ => None,
        },
        [
            Op::RegisterOffset {
                register, offset, ..
            },
            Op::Deref {
                size: 8,
                space: false,
                ..
            },
            rest @ ..,
        ] => {
            let t = match *register {
                X86_64::RSP => CfaType::DerefRsp,
                X86_64::RBP => CfaType::DerefRbp,
                _ => return None,
            };
            let addend = match rest {
                [] => 0,
                [Op::PlusConstant { value }] => i64::try_from(*value).ok()?,
                _ => return None,
            };
            Some((t, Row::pack_deref(*offset, addend)?))
        }
        _ => None,
    }
}

/// PLT sections no FDE covers get synthesised rows: `.plt` is GNU ld's lazy-binding layout
/// (PLT0 entered with the entry's index pushed: CFA = RSP + 16, + 24 after PLT0's own push at
/// offset 6; then 16-byte entries whose `push` ends at offset 11: [`CfaType::Plt1`]); `.plt.got`
/// and `.plt.sec` entries are a lone indirect `jmp` (CFA = RSP + 8). With `.plt.sec` present the
/// `.plt` has the IBT layout, which is not synthesised (left without rows).
fn add_plt_sections(file: &ElfFile64<'_, object::LittleEndian>, out: &mut Collected) {
    let ibt = file.section_by_name(".plt.sec").is_some();
    let mut covered: Vec<(u64, u64)> = out.spans.iter().map(|s| (s.start, s.end)).collect();
    covered.sort_unstable();
    for name in [".plt", ".plt.got", ".plt.sec"] {
        let Some(s) = file.section_by_name(name) else {
            continue;
        };
        let (start, size) = (s.address(), s.size());
        let Some(end) = start.checked_add(size) else {
            continue;
        };
        if size == 0 || (name == ".plt" && ibt) {
            continue;
        }
        // Any FDE overlapping the section wins.
        let i = covered.partition_point(|&(_, e)| e <= start);
        if covered.get(i).is_some_and(|&(b, _)| b < end) {
            continue;
        }
        let mark = out.rows.len();
        if name == ".plt" {
            out.rows
                .push((start, Row::new(0, CfaType::RspOffset, 16, None)));
            if size > 16 {
                out.rows
                    .push((start + 6, Row::new(0, CfaType::RspOffset, 24, None)));
                out.rows.push((start + 16, Row::command(0, CfaType::Plt1)));
            }
        } else {
            out.rows
                .push((start, Row::new(0, CfaType::RspOffset, 8, None)));
        }
        out.spans.push(FdeSpan {
            start,
            end,
            rows: mark..out.rows.len(),
        });
        out.plt_sections += 1;
    }
}
