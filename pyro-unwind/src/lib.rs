//! Compact unwind tables for pyro's eBPF unwinder of native stacks without frame pointers.
//!
//! For one ELF file (x86_64), [`Table::from_elf`] reads the call frame information (`.eh_frame`,
//! found through `PT_GNU_EH_FRAME` when the section headers are stripped, else `.debug_frame`)
//! with gimli and turns it into the 8-byte rows and 64 KiB page index of
//! [`pyro_ebpf_common::unwind`], which user space loads into BPF maps once per file identity
//! ([`FileId`]) and the BPF side walks on every sample. Rules the BPF side cannot follow are
//! marked [`CfaType::Unsupported`] and counted; gaps between functions get END rows; PLT sections
//! without FDEs get PLT rows; equal neighbours are merged. [`Table::lookup`] runs exactly the
//! search the BPF side runs, and [`pyro_ebpf_common::unwind::step`] the same frame step, so the
//! tests of this crate (against gimli as the oracle) hold for the kernel side too.
//!
//! ```
//! use pyro_unwind::Table;
//! use pyro_ebpf_common::unwind::CfaType;
//!
//! let data = std::fs::read("/proc/self/exe").unwrap();
//! let table = Table::from_elf(&data).unwrap();
//! let stats = table.stats();
//! assert!(stats.rows > 0 && stats.pages > 0);
//! assert_eq!(stats.bytes, stats.rows * 8 + stats.pages * 24);
//! // Far below any code: no row.
//! assert!(table.lookup(0x10).is_none_or(|r| r.cfa() == Some(CfaType::End)));
//! ```
#![deny(missing_docs)]

mod build;
mod error;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use error::Error;
pub use pyro_ebpf_common::unwind::{CfaType, PageKey, PageValue, RbpType, Row};
use pyro_ebpf_common::unwind::{MAX_PAGE_ROWS, PAGE_BITS, PAGE_MASK, RowLookup, search_page};

/// Most index pages one table may have (64 GiB of address space at 64 KiB a page).
pub const MAX_PAGES: u64 = 1 << 20;

/// Where a table's rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfiSource {
    /// The `.eh_frame` section.
    EhFrame,
    /// `.eh_frame` found through `PT_GNU_EH_FRAME` (no section headers).
    EhFrameProgramHeader,
    /// `.debug_frame` (no `.eh_frame`).
    DebugFrame,
}

/// The identity tables are shared by: the GNU build id when the file has one, else its device,
/// inode, size and modification time. 64 bits (FNV-1a, stable across builds and runs, so it can
/// key an on-disk cache), the `file_id` of [`PageKey`] and of the BPF mapping entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u64);

impl FileId {
    /// From a GNU build id.
    pub fn from_build_id(build_id: &[u8]) -> Self {
        FileId(fnv1a(&[b"build-id", build_id]))
    }

    /// From a file's device, inode, size and modification time (seconds and nanoseconds).
    pub fn from_stat(dev: u64, ino: u64, size: u64, mtime: i64, mtime_nsec: i64) -> Self {
        FileId(fnv1a(&[
            b"stat",
            &dev.to_le_bytes(),
            &ino.to_le_bytes(),
            &size.to_le_bytes(),
            &mtime.to_le_bytes(),
            &mtime_nsec.to_le_bytes(),
        ]))
    }

    /// The identity of an ELF file whose bytes are `data` and whose metadata is `meta`: its
    /// build id if it has one, else [`FileId::from_stat`].
    pub fn of_file(data: &[u8], meta: &std::fs::Metadata) -> Self {
        match build_id(data) {
            Some(id) => Self::from_build_id(id),
            None => Self::from_stat(
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
            ),
        }
    }
}

/// The GNU build id of an ELF file (from its notes, by section or program header), if any.
pub fn build_id(data: &[u8]) -> Option<&[u8]> {
    use object::Object;
    let file = object::File::parse(data).ok()?;
    file.build_id().ok().flatten().filter(|id| !id.is_empty())
}

/// Load bias of an executable mapping of an ELF file (`data`) at runtime address `start` of
/// file offset `offset`: runtime address - ELF virtual address, from the executable `PT_LOAD`
/// segment that holds the offset (a read-only segment may share the mapping's first page, as
/// in binaries linked without `-z separate-code`), else any that holds it; `None` when the
/// file is not a 64-bit little-endian ELF or no segment holds it.
pub fn load_bias(data: &[u8], start: u64, offset: u64) -> Option<u64> {
    use object::read::elf::ProgramHeader;
    let elf = object::read::elf::ElfFile64::<object::LittleEndian>::parse(data).ok()?;
    let e = elf.endian();
    let holds = |p: &&object::elf::ProgramHeader64<object::LittleEndian>| {
        p.p_type(e) == object::elf::PT_LOAD
            && offset >= p.p_offset(e) & !0xfff
            && offset < p.p_offset(e).saturating_add(p.p_filesz(e))
    };
    let headers = elf.elf_program_headers();
    let ph = headers
        .iter()
        .filter(holds)
        .find(|p| p.p_flags(e) & object::elf::PF_X != 0)
        .or_else(|| headers.iter().find(holds))?;
    Some(
        start
            .wrapping_sub(offset)
            .wrapping_sub(ph.p_vaddr(e).wrapping_sub(ph.p_offset(e))),
    )
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&(part.len() as u64).to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Counts describing a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// FDEs converted (including synthesised PLT ranges).
    pub fdes: u64,
    /// FDEs skipped because they failed to parse or evaluate (and a walk that stopped early).
    pub bad_fdes: u64,
    /// FDEs skipped because they lie outside every executable `PT_LOAD`.
    pub outside_text_fdes: u64,
    /// FDEs cut short because the next FDE starts inside them.
    pub overlapping_fdes: u64,
    /// PLT sections given synthesised rows.
    pub plt_sections: u64,
    /// Rows in the table (after merging), END rows included.
    pub rows: u64,
    /// Rows marked [`CfaType::Unsupported`].
    pub unsupported_rows: u64,
    /// END rows (gaps and the end).
    pub end_rows: u64,
    /// Rows in the index (pages with entries, empty ones included).
    pub pages: u64,
    /// Bytes the BPF maps hold for the table: 8 per row, 16 + 8 per page entry.
    pub bytes: u64,
}

/// The unwind table of one ELF file: rows sorted by address and the page index over them.
#[derive(Debug, Clone)]
pub struct Table {
    rows: Vec<Row>,
    pages: Vec<(u64, PageValue)>,
    source: CfiSource,
    stats: Stats,
}

impl Table {
    /// Reads the ELF file at `path` and builds its table.
    pub fn from_path(path: &Path) -> Result<Self, Error> {
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_elf(&data)
    }

    /// Builds the table of the ELF file whose bytes are `data`.
    pub fn from_elf(data: &[u8]) -> Result<Self, Error> {
        let collected = build::collect(data)?;
        let source = collected.source.unwrap_or(CfiSource::EhFrame);
        let mut stats = Stats {
            bad_fdes: collected.bad_fdes,
            outside_text_fdes: collected.outside_text_fdes,
            plt_sections: collected.plt_sections,
            ..Stats::default()
        };
        let flat = flatten(collected, &mut stats);
        let table = Self::from_sorted_rows(&flat, source, stats)?;
        tracing::debug!(
            rows = table.stats.rows,
            unsupported = table.stats.unsupported_rows,
            pages = table.stats.pages,
            bad_fdes = table.stats.bad_fdes,
            "unwind table built"
        );
        Ok(table)
    }

    fn from_sorted_rows(
        flat: &[(u64, Row)],
        source: CfiSource,
        mut stats: Stats,
    ) -> Result<Self, Error> {
        if u32::try_from(flat.len()).is_err() {
            return Err(Error::TooManyRows { rows: flat.len() });
        }
        let mut pages: Vec<(u64, PageValue)> = Vec::new();
        let mut rows = Vec::with_capacity(flat.len());
        let mut i = 0;
        while i < flat.len() {
            let page = flat[i].0 >> PAGE_BITS;
            let n = flat[i..]
                .iter()
                .take_while(|(a, _)| a >> PAGE_BITS == page)
                .count();
            // Pages the previous (non-END) row runs through without a row of their own.
            if let (Some(&(prev, _)), Some((_, last))) = (pages.last(), flat.get(i.wrapping_sub(1)))
                && last.cfa() != Some(CfaType::End)
            {
                let gap = page - prev - 1;
                if pages.len() as u64 + gap >= MAX_PAGES {
                    return Err(Error::TooManyPages {
                        pages: pages.len() as u64 + gap + 1,
                        max: MAX_PAGES,
                    });
                }
                pages.extend((prev + 1..page).map(|p| {
                    (
                        p,
                        PageValue {
                            first: i as u32,
                            count: 0,
                        },
                    )
                }));
            }
            if n > MAX_PAGE_ROWS as usize {
                return Err(Error::PageTooDense {
                    page,
                    rows: n,
                    max: MAX_PAGE_ROWS,
                });
            }
            if pages.len() as u64 >= MAX_PAGES {
                return Err(Error::TooManyPages {
                    pages: pages.len() as u64 + 1,
                    max: MAX_PAGES,
                });
            }
            pages.push((
                page,
                PageValue {
                    first: i as u32,
                    count: n as u32,
                },
            ));
            for &(addr, row) in &flat[i..i + n] {
                rows.push(Row {
                    pc_low: (addr & PAGE_MASK) as u16,
                    ..row
                });
            }
            i += n;
        }
        stats.rows = rows.len() as u64;
        stats.unsupported_rows = rows
            .iter()
            .filter(|r| r.cfa() == Some(CfaType::Unsupported))
            .count() as u64;
        stats.end_rows = rows
            .iter()
            .filter(|r| r.cfa() == Some(CfaType::End))
            .count() as u64;
        stats.pages = pages.len() as u64;
        stats.bytes = stats.rows * 8 + stats.pages * 24;
        Ok(Table {
            rows,
            pages,
            source,
            stats,
        })
    }

    /// The row governing `pc` (an ELF virtual address, already `- 1` for a return address),
    /// found exactly as the BPF side finds it: the page entry of `pc >> 16`, then
    /// [`search_page`]. `None` when no page entry covers it.
    pub fn lookup(&self, pc: u64) -> Option<Row> {
        self.lookup_index(pc)
            .and_then(|i| self.rows.get(i as usize).copied())
    }

    /// As [`Table::lookup`], the row's index in [`Table::rows`].
    pub fn lookup_index(&self, pc: u64) -> Option<u32> {
        let page = pc >> PAGE_BITS;
        let at = self.pages.binary_search_by_key(&page, |&(p, _)| p).ok()?;
        search_page(&self.rows[..], &self.pages[at].1, (pc & PAGE_MASK) as u16)
    }

    /// The rows, in address order: the BPF per-file array.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The page index, in page order: `(page, value)`, keyed in BPF as
    /// [`PageKey`]`{ file_id, page }`.
    pub fn pages(&self) -> &[(u64, PageValue)] {
        &self.pages
    }

    /// Where the rows came from.
    pub fn source(&self) -> CfiSource {
        self.source
    }

    /// Counts.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

impl RowLookup for Table {
    fn lookup(&self, pc: u64) -> Option<Row> {
        Table::lookup(self, pc)
    }
}

/// FDE spans → one address-ordered row list: a later-starting FDE cuts an earlier one short,
/// END rows close every FDE not directly followed by another, and a row equal to its
/// predecessor is dropped.
fn flatten(c: build::Collected, stats: &mut Stats) -> Vec<(u64, Row)> {
    let mut spans = c.spans;
    spans.sort_by_key(|s| (s.start, s.end));
    stats.fdes = spans.len() as u64;
    let mut out: Vec<(u64, Row)> = Vec::with_capacity(c.rows.len() + spans.len());
    let push = |out: &mut Vec<(u64, Row)>, addr: u64, row: Row| {
        while out.last().is_some_and(|&(a, _)| a >= addr) {
            out.pop();
        }
        if !out.last().is_some_and(|(_, last)| last.same_rule(&row)) {
            out.push((addr, row));
        }
    };
    for (i, span) in spans.iter().enumerate() {
        let next = spans.get(i + 1).map(|s| s.start);
        let limit = match next {
            Some(n) if n < span.end => {
                stats.overlapping_fdes += 1;
                n
            }
            _ => span.end,
        };
        for &(addr, row) in &c.rows[span.rows.clone()] {
            if addr >= span.start && addr < limit {
                push(&mut out, addr, row);
            }
        }
        if limit == span.end && next != Some(span.end) {
            push(&mut out, span.end, Row::command(0, CfaType::End));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsp(off: u16) -> Row {
        Row::new(0, CfaType::RspOffset, off, None)
    }

    type Span<'a> = (u64, u64, &'a [(u64, Row)]);

    fn table(spans: &[Span<'_>]) -> Table {
        let mut c = build::Collected::default();
        for &(start, end, rows) in spans {
            let mark = c.rows.len();
            c.rows.extend_from_slice(rows);
            c.spans.push(build::FdeSpan {
                start,
                end,
                rows: mark..c.rows.len(),
            });
        }
        let mut stats = Stats::default();
        let flat = flatten(c, &mut stats);
        Table::from_sorted_rows(&flat, CfiSource::EhFrame, stats).unwrap()
    }

    #[test]
    fn gaps_get_end_rows_and_equal_rows_merge() {
        let t = table(&[
            (
                0x1000,
                0x1010,
                &[(0x1000, rsp(8)), (0x1001, rsp(16)), (0x100f, rsp(8))],
            ),
            (0x1010, 0x1020, &[(0x1010, rsp(8))]),
            (0x1030, 0x1040, &[(0x1030, rsp(8))]),
        ]);
        assert_eq!(t.lookup(0xfff), None);
        assert_eq!(
            t.lookup(0x1000),
            Some(Row {
                pc_low: 0x1000,
                ..rsp(8)
            })
        );
        assert_eq!(t.lookup(0x100e).map(|r| r.cfa_offset), Some(16));
        // 0x100f..0x1020 is one merged row.
        assert_eq!(
            t.lookup(0x101f),
            Some(Row {
                pc_low: 0x100f,
                ..rsp(8)
            })
        );
        assert_eq!(t.lookup(0x1020).and_then(|r| r.cfa()), Some(CfaType::End));
        assert_eq!(t.lookup(0x1035).map(|r| r.cfa_offset), Some(8));
        assert_eq!(t.lookup(0x1040).and_then(|r| r.cfa()), Some(CfaType::End));
        assert_eq!(t.stats().rows, 6);
        assert_eq!(t.stats().end_rows, 2);
    }

    #[test]
    fn a_function_across_pages_is_found_in_every_page() {
        let t = table(&[(0xfff0, 0x3_0010, &[(0xfff0, rsp(8)), (0x2_0005, rsp(16))])]);
        // Page 1 has no row of its own: an empty entry points back to row 0.
        assert_eq!(t.pages().len(), 4);
        assert_eq!(t.lookup(0x1_8000).map(|r| r.cfa_offset), Some(8));
        assert_eq!(t.lookup(0x2_0004).map(|r| r.cfa_offset), Some(8));
        assert_eq!(t.lookup(0x2_ffff).map(|r| r.cfa_offset), Some(16));
        assert_eq!(t.lookup(0x3_0010).and_then(|r| r.cfa()), Some(CfaType::End));
        assert_eq!(t.lookup(0x4_0000), None);
    }

    #[test]
    fn a_later_fde_cuts_an_overlapping_one() {
        let t = table(&[
            (0x1000, 0x1100, &[(0x1000, rsp(8))]),
            (0x1080, 0x1090, &[(0x1080, rsp(16))]),
        ]);
        assert_eq!(t.stats().overlapping_fdes, 1);
        assert_eq!(t.lookup(0x107f).map(|r| r.cfa_offset), Some(8));
        assert_eq!(t.lookup(0x1085).map(|r| r.cfa_offset), Some(16));
        assert_eq!(t.lookup(0x1095).and_then(|r| r.cfa()), Some(CfaType::End));
    }

    #[test]
    fn absurd_ranges_are_typed_errors() {
        let mut c = build::Collected::default();
        c.rows.push((0, rsp(8)));
        c.spans.push(build::FdeSpan {
            start: 0,
            end: 1 << 62,
            rows: 0..1,
        });
        let mut stats = Stats::default();
        let flat = flatten(c, &mut stats);
        assert!(matches!(
            Table::from_sorted_rows(&flat, CfiSource::EhFrame, stats),
            Err(Error::TooManyPages { .. })
        ));
        assert!(matches!(
            Table::from_elf(b"\x7fELF garbage"),
            Err(Error::Elf(_))
        ));
        assert!(matches!(Table::from_elf(&[]), Err(Error::Elf(_))));
    }

    #[test]
    fn file_ids_are_stable_and_separate_domains() {
        assert_eq!(
            FileId::from_build_id(b"\x01\x02"),
            FileId::from_build_id(b"\x01\x02")
        );
        assert_ne!(
            FileId::from_build_id(b"\x01\x02"),
            FileId::from_build_id(b"\x01\x03")
        );
        assert_ne!(
            FileId::from_stat(1, 2, 3, 4, 5),
            FileId::from_stat(1, 2, 3, 4, 6)
        );
        // The value is part of the on-disk/BPF contract: pin it (FNV-1a 64 of the tag, the id
        // and their lengths, computed independently).
        assert_eq!(FileId::from_build_id(b"\x01\x02").0, 0x63cc_87d0_50a5_171a);
    }
}
