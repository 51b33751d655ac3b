//! What can go wrong building a table.

/// Why a table could not be built. A single bad FDE does not fail the build: it is skipped and
/// counted in [`crate::Stats::bad_fdes`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not an ELF file `object` can read (bad magic, truncated headers).
    #[error("not a readable ELF file: {0}")]
    Elf(#[source] object::Error),
    /// The ELF file is not for x86_64 (the only architecture the BPF unwinder follows).
    #[error("ELF file is for {0:?}, not x86_64")]
    Architecture(object::Architecture),
    /// Neither `.eh_frame` (by section or `PT_GNU_EH_FRAME`) nor `.debug_frame`.
    #[error("no unwind information: no .eh_frame, PT_GNU_EH_FRAME or .debug_frame")]
    NoUnwindInfo,
    /// A section's bytes could not be read (out of the file, or bad compression).
    #[error("section {section} cannot be read: {source}")]
    Section {
        /// The section's name.
        section: &'static str,
        /// What `object` said.
        #[source]
        source: object::Error,
    },
    /// `PT_GNU_EH_FRAME` (`.eh_frame_hdr`) is malformed, or points to no loaded `.eh_frame`.
    #[error("PT_GNU_EH_FRAME is unusable: {reason}")]
    EhFrameHdr {
        /// What was wrong.
        reason: String,
    },
    /// The CFI section could not be walked at all (its first entry is malformed).
    #[error("{section} at offset {offset:#x}: {source}")]
    Cfi {
        /// `.eh_frame` or `.debug_frame`.
        section: &'static str,
        /// Offset of the entry in the section.
        offset: u64,
        /// What gimli said.
        #[source]
        source: gimli::Error,
    },
    /// One 64 KiB page would need a row at every address: more than the BPF search can cover.
    #[error("page {page:#x} has {rows} rows, more than the {max} one search covers")]
    PageTooDense {
        /// The page (address >> 16).
        page: u64,
        /// Rows it would hold.
        rows: usize,
        /// [`pyro_ebpf_common::unwind::MAX_PAGE_ROWS`].
        max: u32,
    },
    /// The FDEs span more pages than [`crate::MAX_PAGES`] (absurd address ranges).
    #[error("table would need {pages} index pages, more than the cap of {max}")]
    TooManyPages {
        /// Pages needed (at least).
        pages: u64,
        /// [`crate::MAX_PAGES`].
        max: u64,
    },
    /// The table would hold more rows than a `u32` index reaches.
    #[error("table would hold {rows} rows, more than a u32 index reaches")]
    TooManyRows {
        /// Rows needed.
        rows: usize,
    },
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}
