//! ELF files that are not the common case: section headers stripped (`.eh_frame` found through
//! `PT_GNU_EH_FRAME`), only `.debug_frame`, and corrupt or truncated bytes.

mod common;

use std::process::Command;

use common::{Fde, check, cut_overlaps, report};
use gimli::{BaseAddresses, DebugFrame, LittleEndian, UnwindSection};
use object::{Object, ObjectSection};
use pyro_unwind::{CfiSource, Error, Table};

/// The bytes of `data` with the section header table gone (`e_shoff`, `e_shnum`, `e_shstrndx`
/// zeroed), as `strip --strip-section-headers` or a packer leaves a file.
fn without_section_headers(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out[0x28..0x30].fill(0);
    out[0x3c..0x40].fill(0);
    out
}

#[test]
fn stripped_section_headers_give_the_same_table() {
    let data = std::fs::read(common::fixture(common::LIBC)).unwrap();
    let full = Table::from_elf(&data).unwrap();
    let stripped_bytes = without_section_headers(&data);
    assert_eq!(
        object::File::parse(&*stripped_bytes)
            .unwrap()
            .sections()
            .count(),
        0
    );
    let stripped = Table::from_elf(&stripped_bytes).unwrap();
    assert_eq!(full.source(), CfiSource::EhFrame);
    assert_eq!(stripped.source(), CfiSource::EhFrameProgramHeader);
    assert_eq!(full.rows(), stripped.rows());
    assert_eq!(full.pages(), stripped.pages());
    assert_eq!(full.stats(), stripped.stats());
    // The identity survives too: the build id note is found through PT_NOTE.
    assert!(pyro_unwind::build_id(&stripped_bytes).is_some());
    assert_eq!(
        pyro_unwind::build_id(&stripped_bytes),
        pyro_unwind::build_id(&data)
    );
}

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) long leaf(long x) { long a[64]; for (int i = 0; i < 64; i++) a[i] = x * i; return a[x & 63]; }
__attribute__((noinline)) long mid(long x) { return leaf(x) + leaf(x + 1); }
int main(int argc, char **argv) { printf("%ld\n", mid(argc)); return 0; }
"#;

/// A binary whose only CFI is `.debug_frame` (gcc `-g -fno-asynchronous-unwind-tables`, then
/// `.eh_frame` removed by objcopy): the table comes from it and matches gimli's
/// `DebugFrame` rows at every address.
#[test]
fn debug_frame_only_binary_matches_gimli() {
    let (Some(gcc), Some(objcopy)) = (pyro_testkit::tool("gcc"), pyro_testkit::tool("objcopy"))
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pyro-unwind-df-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, with_eh, only_df) = (dir.join("p.c"), dir.join("p"), dir.join("p.df"));
    std::fs::write(&src, PROGRAM).unwrap();
    let ok = Command::new(gcc)
        .args([
            "-O2",
            "-g",
            "-fno-asynchronous-unwind-tables",
            "-fomit-frame-pointer",
            "-o",
        ])
        .arg(&with_eh)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new(objcopy)
        .args([
            "--remove-section=.eh_frame",
            "--remove-section=.eh_frame_hdr",
        ])
        .arg(&with_eh)
        .arg(&only_df)
        .status()
        .unwrap();
    assert!(ok.success());
    let data = std::fs::read(&only_df).unwrap();
    let table = Table::from_elf(&data).unwrap();
    assert_eq!(table.source(), CfiSource::DebugFrame);

    let file = object::File::parse(&*data).unwrap();
    let df = file.section_by_name(".debug_frame").expect(".debug_frame");
    let bytes = df.uncompressed_data().unwrap().into_owned();
    let mut section = DebugFrame::new(&bytes, LittleEndian);
    section.set_address_size(8);
    let bases = BaseAddresses::default();
    let mut fdes: Vec<Fde<'_>> = Vec::new();
    let mut entries = section.entries(&bases);
    while let Some(e) = entries.next().unwrap() {
        if let gimli::CieOrFde::Fde(p) = e {
            let fde = p.parse(DebugFrame::cie_from_offset).unwrap();
            if fde.len() > 0 {
                fdes.push((fde.initial_address(), fde.end_address(), fde));
            }
        }
    }
    cut_overlaps(&mut fdes);
    assert!(fdes.len() >= 3, "main, mid and leaf have FDEs");
    let plts = common::plt_sections(&data);
    let counts = check("debug_frame binary", &table, &section, &bases, &fdes, &plts);
    assert!(
        counts.plt_addresses > 0,
        "its .plt has no FDE: synthesised rows checked"
    );
    report("debug_frame binary", &table, &counts);
    assert!(counts.addresses > 50);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn no_unwind_information_is_a_typed_error() {
    // libc's bytes with the section headers gone and PT_GNU_EH_FRAME turned into PT_NULL.
    let data = std::fs::read(common::fixture(common::LIBC)).unwrap();
    let mut bytes = without_section_headers(&data);
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(bytes[0x38..0x3a].try_into().unwrap()) as usize;
    for i in 0..phnum {
        let at = phoff + i * 56;
        if u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == object::elf::PT_GNU_EH_FRAME
        {
            bytes[at..at + 4].fill(0);
        }
    }
    assert!(matches!(Table::from_elf(&bytes), Err(Error::NoUnwindInfo)));
    // Not x86_64: a typed error naming the architecture.
    let mut arm = data.clone();
    arm[0x12..0x14].copy_from_slice(&object::elf::EM_AARCH64.to_le_bytes());
    assert!(matches!(Table::from_elf(&arm), Err(Error::Architecture(_))));
}

/// Truncated files and `.eh_frame` bytes flipped at random never panic; a build either fails
/// with a typed error or yields a table whose lookups stay in bounds.
#[test]
fn corrupt_and_truncated_files_never_panic() {
    let data = std::fs::read(common::fixture(common::LIBC)).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let eh = file.section_by_name(".eh_frame").unwrap();
    let (off, len) = eh.file_range().unwrap();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0;
    for round in 0..40 {
        let mut bytes = data.clone();
        if round % 4 == 0 {
            bytes.truncate((next() % data.len() as u64) as usize);
        } else {
            for _ in 0..(1 + next() % 64) {
                let at = off + next() % len;
                bytes[at as usize] = next() as u8;
            }
        }
        match Table::from_elf(&bytes) {
            Ok(t) => {
                for _ in 0..1000 {
                    let _ = t.lookup(next() % 0x20_0000);
                }
            }
            Err(e) => {
                errors += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    // Truncation mostly breaks the file; flips mostly cost single FDEs.
    assert!(errors > 0 && errors < 40, "{errors} errors");
}
