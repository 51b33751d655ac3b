//! The DWARF and ELF symbol readers must never panic on any file, and never allocate beyond
//! their caps: the input is read as an ELF image (symbol tables, then DWARF lines and inline
//! frames looked up at addresses spread over the image).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pyro_symbolize::{DebugInfo, Demangle, ElfSymbols};

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.elf");
    if let Ok(syms) = ElfSymbols::from_bytes(data.to_vec(), name, Demangle::Full) {
        for a in (0..data.len() as u64).step_by(61) {
            let _ = syms.lookup(a);
        }
    }
    // A cap well below the fuzzer's memory limit, as the symbolizer's budget would be.
    if let Ok(info) = DebugInfo::from_bytes(data, name, Demangle::Full, 64 << 20) {
        for a in (0..data.len() as u64 * 4).step_by(17).take(4096) {
            let _ = info.lookup(a);
        }
    }
});
