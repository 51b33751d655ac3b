//! The ELF symbol-table reader never panics on any file, in memory or on disk (names are then
//! read lazily from the file), and what it finds is consistent: addresses of the file's own
//! symbols (as `object` reads them) and addresses spread over the image are looked up one by
//! one and in a batch with the same answers, in every demangle mode. Symbol names also go
//! through the demangler on their own.
#![no_main]

use std::io::Write;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use object::{Object, ObjectSymbol};
use pyro_symbolize::{Demangle, ElfSymbols, demangle};

const MODES: [Demangle; 4] = [
    Demangle::None,
    Demangle::Simplified,
    Demangle::Templates,
    Demangle::Full,
];

fn addresses(data: &[u8]) -> Vec<u64> {
    let mut addrs: Vec<u64> = (0..data.len() as u64).step_by(97).take(256).collect();
    if let Ok(file) = object::File::parse(data) {
        for s in file.symbols().chain(file.dynamic_symbols()).take(512) {
            addrs.extend([s.address(), s.address().wrapping_add(s.size() / 2)]);
            if let Ok(name) = s.name() {
                let _ = demangle(name, MODES[name.len() % MODES.len()]);
            }
        }
    }
    addrs
}

fn check(syms: &ElfSymbols, addrs: &[u64]) {
    let batch = syms.lookup_many(addrs);
    assert_eq!(batch.len(), addrs.len());
    for (a, b) in addrs.iter().zip(&batch) {
        assert_eq!(
            syms.lookup(*a),
            *b,
            "lookup and lookup_many agree at {a:#x}"
        );
    }
    for &a in addrs.iter().take(64) {
        if let Some(v) = syms.file_offset_to_vaddr(a) {
            let _ = syms.lookup(v);
        }
        let _ = syms.lookup_file_offset(a);
    }
}

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.elf");
    let addrs = addresses(data);
    // One demangle mode per input (the first byte of an ELF file is always 0x7f).
    let mode = MODES[data.len() % MODES.len()];
    if let Ok(syms) = ElfSymbols::from_bytes(data.to_vec(), name, mode) {
        check(&syms, &addrs);
    }
    // From a file, string tables are read lazily in windows (`lookup_many`'s prefetch).
    // tempfile(): unlinked at once (O_TMPFILE), nothing left behind however the run ends.
    let mut file = tempfile::tempfile().expect("temporary file");
    file.write_all(data).unwrap();
    if let Ok(syms) = ElfSymbols::from_file(file, name, Demangle::Full) {
        check(&syms, &addrs);
    }
});
