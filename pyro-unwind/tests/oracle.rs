//! The table oracle: for every instruction address covered by an FDE of libc, libstdc++ and a
//! binary over 50 MB, the caller frame our table gives (row found by the BPF search, applied by
//! the BPF frame step) equals the one gimli's `UnwindTable` row for that address gives, both
//! evaluated on the same synthetic registers and memory; or our row is UNSUPPORTED, counted.
//! Addresses in gaps between FDEs must give END (or no row).

mod common;

use common::{BP0, Expected, Oracle, SP0, expected, mem};
use pyro_ebpf_common::unwind::{Memory, Regs, Step, apply_row};
use pyro_unwind::{CfaType, Table};

struct Synthetic;
impl Memory for Synthetic {
    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        Some(mem(addr))
    }
}

#[derive(Debug, Default)]
struct Counts {
    addresses: u64,
    unsupported_addresses: u64,
    gimli_cannot: u64,
    gap_addresses: u64,
    signal_addresses: u64,
    plt_addresses: u64,
}

/// A PLT address no FDE covers: our synthesised row must give what GNU ld's own `.plt` CFI
/// gives (evaluated by gimli): CFA = RSP + 16 at PLT0 (entered with the index pushed), + 24
/// after PLT0's push, then ld's expression `rsp + 8 + ((rip & 15) >= 11) * 8` for the entries
/// of `.plt`, and RSP + 8 in `.plt.got`/`.plt.sec` (a lone `jmp`).
fn check_synthesised_plt(table: &Table, pc: u64, plts: &[(u64, u64)]) {
    let row = table.lookup(pc).expect("a synthesised PLT row");
    let (plt, _) = plts[0];
    let cfa = if plts.iter().position(|&(b, e)| pc >= b && pc < e) != Some(0) {
        SP0 + 8
    } else if pc < plt + 6 {
        SP0 + 16
    } else if pc < plt + 16 {
        SP0 + 24
    } else {
        common::eval_bytes(&common::LD_PLT_EXPRESSION, pc)
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

fn check_file(path: &std::path::Path) -> (Table, Counts) {
    let data = std::fs::read(path).expect("read");
    let table = Table::from_elf(&data).expect("table");
    let oracle = Oracle::new(&data);
    let mut ctx = Oracle::context();
    let mut counts = Counts::default();
    let mut mismatches = Vec::new();
    let file = object::File::parse(&*data).expect("ELF");
    let plts: Vec<(u64, u64)> = [".plt", ".plt.got", ".plt.sec"]
        .iter()
        .filter_map(|n| object::Object::section_by_name(&file, n))
        .map(|s| {
            use object::ObjectSection;
            (s.address(), s.address() + s.size())
        })
        .collect();
    let mut prev_end = None;
    for (start, end, fde) in &oracle.fdes {
        // Gaps since the previous FDE: no unwind information.
        if let Some(p) = prev_end {
            for a in p..*start {
                if plts.iter().any(|&(b, e)| a >= b && a < e) {
                    counts.plt_addresses += 1;
                    check_synthesised_plt(&table, a, &plts);
                    continue;
                }
                counts.gap_addresses += 1;
                let row = table.lookup(a);
                assert!(
                    row.is_none_or(|r| r.cfa() == Some(CfaType::End)),
                    "{}: gap address {a:#x} has row {row:?}",
                    path.display()
                );
            }
        }
        prev_end = Some(*end);
        let signal = fde.is_signal_trampoline();
        let mut rows = fde
            .rows(&oracle.eh_frame, &oracle.bases, &mut ctx)
            .expect("rows");
        while let Some(row) = rows.next_row().expect("row") {
            let (rs, re) = (row.start_address().max(*start), row.end_address().min(*end));
            // Rules that do not read RIP give the same answer at every address of the row.
            let pc_free = !matches!(row.cfa(), gimli::CfaRule::Expression(_))
                && row.registers().all(|(_, r)| {
                    !matches!(
                        r,
                        gimli::RegisterRule::Expression(_)
                            | gimli::RegisterRule::ValExpression(_)
                            | gimli::RegisterRule::Register(gimli::X86_64::RA)
                    )
                });
            let mut cached: Option<Expected> = None;
            for pc in rs..re {
                counts.addresses += 1;
                let want = match (&cached, pc_free) {
                    (Some(w), true) => w.clone(),
                    _ => {
                        let w = expected(&oracle.eh_frame, row, pc);
                        cached = Some(w.clone());
                        w
                    }
                };
                let Some(ours) = table.lookup(pc) else {
                    mismatches.push(format!("{pc:#x}: no row, gimli {want:?}"));
                    continue;
                };
                let regs = Regs {
                    pc,
                    sp: SP0,
                    bp: BP0,
                };
                let got = apply_row(&regs, &ours, &mut Synthetic);
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
    assert!(
        mismatches.is_empty(),
        "{}: {} mismatches, first: {:#?}",
        path.display(),
        mismatches.len(),
        mismatches
    );
    (table, counts)
}

fn report(name: &str, table: &Table, counts: &Counts) {
    let s = table.stats();
    println!(
        "{name}: {} addresses checked ({} in gaps, {} in synthesised PLT rows), {} unsupported ({:.4} %), {} in signal frames; \
         table {} rows ({} unsupported, {} END), {} pages, {} bytes, {} FDEs ({} overlapping, {} bad, \
         {} outside text), {} PLT sections synthesised",
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
    assert_eq!(
        s.bad_fdes, 0,
        "{name}: no FDE of a distribution file is malformed"
    );
    // Real files are overwhelmingly followable; a converter that gave up would fail here.
    assert!(
        counts.unsupported_addresses * 1000 < counts.addresses,
        "{name}: too many unsupported"
    );
}

#[test]
fn libc_table_matches_gimli_at_every_address() {
    let (table, counts) = check_file(&common::fixture(common::LIBC));
    report("libc.so.6", &table, &counts);
    // glibc's __restore_rt is a signal frame, and _start/clone end the stack.
    assert!(
        counts.signal_addresses > 0,
        "the signal trampoline was checked"
    );
    assert!(table.rows().iter().any(|r| r.cfa() == Some(CfaType::Stop)));
}

#[test]
fn libstdcxx_table_matches_gimli_at_every_address() {
    let (table, counts) = check_file(&common::fixture(common::LIBSTDCXX));
    report("libstdc++.so.6", &table, &counts);
    // Its .plt has ld's PLT expression.
    assert!(table.rows().iter().any(|r| r.cfa() == Some(CfaType::Plt1)));
}

#[test]
fn big_binary_table_matches_gimli_at_every_address() {
    let path = common::big_binary();
    let (table, counts) = check_file(&path);
    report(&path.display().to_string(), &table, &counts);
    assert!(
        counts.addresses > 50_000_000,
        "a binary with over 50 MB of code"
    );
}
