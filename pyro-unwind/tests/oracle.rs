//! The table oracle: for every instruction address covered by an FDE of libc, libstdc++ and a
//! binary over 50 MB, the caller frame our table gives (row found by the BPF search, applied by
//! the BPF frame step) equals the one gimli's `UnwindTable` row for that address gives, both
//! evaluated on the same synthetic registers and memory; or our row is UNSUPPORTED, counted.
//! Addresses in gaps between FDEs must give END (or no row); PLT addresses no FDE covers must
//! give what GNU ld's `.plt` CFI gives.

mod common;

use common::{Counts, Oracle, check, plt_sections, report};
use pyro_unwind::{CfaType, Table};

fn check_file(path: &std::path::Path) -> (Table, Counts) {
    let data = std::fs::read(path).expect("read");
    let table = Table::from_elf(&data).expect("table");
    let oracle = Oracle::new(&data);
    let name = path.display().to_string();
    let counts = check(
        &name,
        &table,
        &oracle.eh_frame,
        &oracle.bases,
        &oracle.fdes,
        &plt_sections(&data),
    );
    report(&name, &table, &counts);
    (table, counts)
}

#[test]
fn libc_table_matches_gimli_at_every_address() {
    let (table, counts) = check_file(&common::fixture(common::LIBC));
    // glibc's __restore_rt is a signal frame, and _start/clone end the stack.
    assert!(
        counts.signal_addresses > 0,
        "the signal trampoline was checked"
    );
    assert!(table.rows().iter().any(|r| r.cfa() == Some(CfaType::Stop)));
}

#[test]
fn libstdcxx_table_matches_gimli_at_every_address() {
    let (table, _) = check_file(&common::fixture(common::LIBSTDCXX));
    // Its .plt has ld's PLT expression.
    assert!(table.rows().iter().any(|r| r.cfa() == Some(CfaType::Plt1)));
}

/// Walks bytes, not rows: every address of every FDE (96 M for librustc_driver, ≈ 6 s with the
/// crates on the path optimised in test builds, see the root Cargo.toml).
#[test]
fn big_binary_table_matches_gimli_at_every_address() {
    let path = common::big_binary();
    let (table, counts) = check_file(&path);
    assert!(
        counts.addresses > 50_000_000,
        "a binary with over 50 MB of code"
    );
    // BOLT left its .plt without an FDE: synthesised rows, checked against ld's expression.
    assert!(counts.plt_addresses > 0 && table.stats().plt_sections > 0);
}
