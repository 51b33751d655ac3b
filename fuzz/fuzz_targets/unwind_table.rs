//! The unwind-table builder never panics or loops on any ELF file or `.eh_frame` bytes, and
//! what it builds keeps the invariants the BPF search relies on.
//!
//! Input: first byte odd → the rest replaces the `.eh_frame` of `/usr/bin/true` (the
//! `.eh_frame_hdr` and program headers still point at it, so the CFI parser sees arbitrary
//! entries); even → the rest is the whole file, and is also tried with its section headers
//! removed (the `PT_GNU_EH_FRAME` path).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use object::{Object, ObjectSection};
use pyro_ebpf_common::unwind::MAX_PAGE_ROWS;
use pyro_unwind::Table;

fn template() -> &'static (Vec<u8>, usize, usize) {
    static T: OnceLock<(Vec<u8>, usize, usize)> = OnceLock::new();
    T.get_or_init(|| {
        let data = std::fs::read("/usr/bin/true").expect("/usr/bin/true");
        let file = object::File::parse(&*data).expect("ELF");
        let (off, len) =
            file.section_by_name(".eh_frame").and_then(|s| s.file_range()).expect(".eh_frame");
        (data.clone(), off as usize, len as usize)
    })
}

fn check(bytes: &[u8]) {
    let Ok(table) = Table::from_elf(bytes) else { return };
    let rows = table.rows();
    let mut prev = None;
    for &(page, value) in table.pages() {
        assert!(prev.is_none_or(|p| p < page), "pages sorted");
        prev = Some(page);
        assert!(value.count <= MAX_PAGE_ROWS);
        assert!(value.first as usize + value.count as usize <= rows.len());
        for probe in [0u64, 1, 0x7fff, 0xffff] {
            let pc = (page << 16) | probe;
            if let Some(i) = table.lookup_index(pc) {
                assert!((i as usize) < rows.len());
            }
        }
    }
    let s = table.stats();
    assert_eq!(s.rows as usize, rows.len());
    assert_eq!(s.bytes, s.rows * 8 + s.pages * 24);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector & 1 == 1 {
        let (tpl, off, len) = template();
        let mut bytes = tpl.clone();
        let n = rest.len().min(*len);
        bytes[*off..off + n].copy_from_slice(&rest[..n]);
        check(&bytes);
    } else {
        check(rest);
        if rest.len() >= 0x40 {
            let mut stripped = rest.to_vec();
            stripped[0x28..0x30].fill(0);
            stripped[0x3c..0x40].fill(0);
            check(&stripped);
        }
    }
});
