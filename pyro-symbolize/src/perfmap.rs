//! JIT perf maps: `/tmp/perf-<pid>.map`, written by runtimes (`node --perf-basic-prof`, the JVM
//! with perf-map-agent, .NET, LuaJIT…) as `START SIZE name` lines, hexadecimal, appended to
//! while the process runs. Read inside the process's root ([`pyro_core::rootfs`]): a perf map
//! planted as a symlink to a host file is resolved inside the container, never on the host.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use pyro_core::rootfs::RootDir;

/// Longest name kept.
const MAX_NAME: usize = 4096;

/// What reading a perf map found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ParseStats {
    /// Lines that are not `START SIZE name`.
    pub(crate) garbage_lines: u64,
    /// Whether the file was bigger than the cap ([`crate::SymbolizerConfig::max_perf_map_size`]).
    pub(crate) truncated: bool,
}

/// The symbols of one process's perf map, sorted by start address.
#[derive(Debug, Default)]
pub(crate) struct PerfMap {
    /// The directory the map's path is resolved in (`/proc/PID/root`).
    root: PathBuf,
    /// The map's path inside `root` (`/tmp/perf-<nspid>.map`).
    path: PathBuf,
    /// Bytes read at most.
    limit: u64,
    /// `(start, end, name)`, sorted by start; later lines win for the same start.
    entries: Vec<(u64, u64, Arc<str>)>,
    /// File length when last read: a longer file is read again.
    read_len: u64,
}

impl PerfMap {
    pub(crate) fn new(root: PathBuf, path: PathBuf, limit: u64) -> Self {
        Self {
            root,
            path,
            limit,
            ..Self::default()
        }
    }

    /// Re-reads the file when it grew (or shrank: a new process reusing the pid) since the
    /// last read. Returns the parse stats of a re-read, `None` when nothing changed or the file
    /// is missing.
    pub(crate) fn refresh(&mut self) -> Option<ParseStats> {
        let opened = RootDir::open(&self.root).and_then(|r| r.open_prefix(&self.path, self.limit));
        let (mut reader, len) = match opened {
            Ok(o) => o,
            Err(error) => {
                if !error.is_not_found() {
                    tracing::debug!(%error, "perf map not read");
                }
                return None;
            }
        };
        if len == self.read_len {
            return None;
        }
        let mut text = Vec::new();
        reader.read_to_end(&mut text).ok()?;
        self.read_len = len;
        let (entries, mut stats) = parse(&text);
        stats.truncated = len > self.limit;
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
        const LIMIT: u64 = 1 << 20;
        let mut map = PerfMap::new(dir.path().into(), "/perf-1.map".into(), LIMIT);
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
        let n = (LIMIT as usize / line.len()) + 10;
        std::fs::write(&path, line.repeat(n)).unwrap();
        let stats = map.refresh().unwrap();
        assert!(stats.truncated);
        assert!(stats.garbage_lines <= 1);
        assert_eq!(map.lookup(0x3000).map(|n| &**n), Some("x"));
    }

    #[test]
    fn a_map_planted_as_a_symlink_out_of_the_root_is_read_inside_it() {
        // `root/tmp/perf-1.map` is an absolute symlink to a path that exists on the host
        // (`host.map`, outside the root) and inside the root (`root<host.map>`).
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let host_map = dir.path().join("host.map");
        std::fs::write(&host_map, "1000 10 host_secret\n").unwrap();
        let inside = root.join(host_map.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, "1000 10 container_fn\n").unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::os::unix::fs::symlink(&host_map, root.join("tmp/perf-1.map")).unwrap();
        let mut map = PerfMap::new(root, "/tmp/perf-1.map".into(), 1 << 20);
        assert!(map.refresh().is_some());
        assert_eq!(map.lookup(0x1000).map(|n| &**n), Some("container_fn"));
    }
}
