//! JIT perf maps: `/tmp/perf-<pid>.map`, written by runtimes (`node --perf-basic-prof`, the JVM
//! with perf-map-agent, .NET, LuaJIT…) as `START SIZE name` lines, hexadecimal, appended to
//! while the process runs.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes of a perf map read at most; the rest of a bigger file is ignored (counted as cut).
pub(crate) const MAX_PERF_MAP_BYTES: u64 = 32 << 20;
/// Longest name kept.
const MAX_NAME: usize = 4096;

/// What reading a perf map found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ParseStats {
    /// Lines that are not `START SIZE name`.
    pub(crate) garbage_lines: u64,
    /// Whether the file was bigger than [`MAX_PERF_MAP_BYTES`].
    pub(crate) truncated: bool,
}

/// The symbols of one process's perf map, sorted by start address.
#[derive(Debug, Default)]
pub(crate) struct PerfMap {
    path: PathBuf,
    /// `(start, end, name)`, sorted by start; later lines win for the same start.
    entries: Vec<(u64, u64, Arc<str>)>,
    /// File length when last read: a longer file is read again.
    read_len: u64,
}

impl PerfMap {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            ..Self::default()
        }
    }

    /// Re-reads the file when it grew (or shrank: a new process reusing the pid) since the
    /// last read. Returns the parse stats of a re-read, `None` when nothing changed or the file
    /// is missing.
    pub(crate) fn refresh(&mut self) -> Option<ParseStats> {
        let file = File::open(&self.path).ok()?;
        let len = file.metadata().ok()?.len();
        if len == self.read_len {
            return None;
        }
        let mut text = Vec::new();
        file.take(MAX_PERF_MAP_BYTES).read_to_end(&mut text).ok()?;
        self.read_len = len;
        let (entries, mut stats) = parse(&text);
        stats.truncated = len > MAX_PERF_MAP_BYTES;
        self.entries = entries;
        Some(stats)
    }

    /// The name of the symbol covering `addr`.
    pub(crate) fn lookup(&self, addr: u64) -> Option<&Arc<str>> {
        let i = self
            .entries
            .partition_point(|e| e.0 <= addr)
            .checked_sub(1)?;
        let (_, end, name) = &self.entries[i];
        (addr < *end).then_some(name)
    }
}

/// Parses perf map text: one entry per valid line, garbage lines counted and skipped.
pub(crate) fn parse(text: &[u8]) -> (Vec<(u64, u64, Arc<str>)>, ParseStats) {
    let mut stats = ParseStats::default();
    let mut entries = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(e) => entries.push(e),
            None => stats.garbage_lines += 1,
        }
    }
    // Stable: for equal starts the later line (a re-JITted function) comes last and wins below.
    entries.sort_by_key(|e| e.0);
    let mut out: Vec<(u64, u64, Arc<str>)> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => out.push(e),
        }
    }
    (out, stats)
}

fn parse_line(line: &[u8]) -> Option<(u64, u64, Arc<str>)> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let (start, size) = (hex(start)?, hex(size)?);
    let name = name.trim();
    if size == 0 || name.is_empty() {
        return None;
    }
    let end = start.checked_add(size)?;
    let name = match name.char_indices().nth(MAX_NAME) {
        Some((cut, _)) => &name[..cut],
        None => name,
    };
    Some((start, end, Arc::from(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_lines_and_counts_garbage() {
        let text = b"7f00aa000000 40 LazyCompile:*hot /app/x.js:3\n\
            garbage\n\
            0x7f00aa000100 0x10 Builtin:ArgumentsAdaptorTrampoline\n\
            7f00aa000040 zz bad size\n\
            ffffffffffffffff 10 overflows\n\
            7f00aa000200 0 zero size\n\
            7f00aa000000 20 LazyCompile:*hot_again /app/x.js:3\n\
            \xff\xfe not utf8\n\
            7f00aa000300 10\n";
        let (entries, stats) = parse(text);
        assert_eq!(stats.garbage_lines, 6);
        assert_eq!(entries.len(), 2);
        let map = PerfMap {
            entries,
            ..PerfMap::default()
        };
        // The later line for the same start wins.
        assert_eq!(
            map.lookup(0x7f00aa000010).map(|n| &**n),
            Some("LazyCompile:*hot_again /app/x.js:3")
        );
        assert_eq!(map.lookup(0x7f00aa000020), None);
        assert_eq!(
            map.lookup(0x7f00aa00010f).map(|n| &**n),
            Some("Builtin:ArgumentsAdaptorTrampoline")
        );
        assert_eq!(map.lookup(0x7f00aa000110), None);
        assert_eq!(map.lookup(0), None);
    }

    #[test]
    fn huge_map_is_read_up_to_the_cap_and_grows_are_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perf-1.map");
        std::fs::write(&path, "1000 10 first\n").unwrap();
        let mut map = PerfMap::new(path.clone());
        assert_eq!(map.refresh(), Some(ParseStats::default()));
        assert_eq!(map.lookup(0x1005).map(|n| &**n), Some("first"));
        assert_eq!(map.refresh(), None, "unchanged file is not re-read");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"2000 10 second\n").unwrap();
        assert!(map.refresh().is_some());
        assert_eq!(map.lookup(0x2001).map(|n| &**n), Some("second"));
        // Past the cap: cut, counted, bounded.
        let line = "3000 10 x\n";
        let n = (MAX_PERF_MAP_BYTES as usize / line.len()) + 10;
        std::fs::write(&path, line.repeat(n)).unwrap();
        let stats = map.refresh().unwrap();
        assert!(stats.truncated);
        assert!(stats.garbage_lines <= 1);
        assert_eq!(map.lookup(0x3000).map(|n| &**n), Some("x"));
    }
}
