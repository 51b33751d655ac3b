//! Parsing `/proc/PID/maps`.

/// One executable mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapEntry {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) offset: u64,
    /// `(major << 32) | minor` of the device holding the file.
    pub(crate) dev: u64,
    pub(crate) inode: u64,
    /// The path column (without a ` (deleted)` suffix), empty for anonymous mappings.
    pub(crate) path: String,
    pub(crate) deleted: bool,
}

impl MapEntry {
    /// What identifies a mapping across re-reads: start, end, inode.
    pub(crate) fn key(&self) -> (u64, u64, u64) {
        (self.start, self.end, self.inode)
    }

    /// The device as `st_dev` encodes it (`makedev(major, minor)`), to compare with `stat`.
    pub(crate) fn dev_t(&self) -> u64 {
        let (major, minor) = (self.dev >> 32, self.dev & 0xffff_ffff);
        ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
    }

    /// Whether the mapping is backed by a file we can try to read symbols from.
    pub(crate) fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Executable mappings of a `/proc/PID/maps` text, sorted by start address, read by the one
/// `/proc` reader of pyro ([`pyro_core::proc::parse_exec_maps`]); lines that do not parse are
/// skipped.
pub(crate) fn parse_maps(text: &str) -> Vec<MapEntry> {
    let maps = match pyro_core::proc::parse_exec_maps(text.as_bytes()) {
        Ok(maps) => maps,
        Err(error) => {
            tracing::debug!(%error, "Unreadable /proc/PID/maps.");
            return Vec::new();
        }
    };
    maps.into_iter()
        .map(|m| MapEntry {
            start: m.start,
            end: m.end,
            offset: m.offset,
            dev: m.dev,
            inode: m.inode,
            path: match (m.path, m.pseudo) {
                (Some(p), _) => p.to_string_lossy().into_owned(),
                (None, Some(pseudo)) => pseudo,
                (None, None) => String::new(),
            },
            deleted: m.deleted,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_lines() {
        let text = "\
55d0c8a00000-55d0c8a02000 r--p 00000000 fd:01 1234   /usr/bin/cat
55d0c8a02000-55d0c8a07000 r-xp 00002000 fd:01 1234   /usr/bin/cat
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f0000100000-7f0000101000 r-xp 00001000 08:12 99     /tmp/my lib.so (deleted)
7ffd1c3f0000-7ffd1c3f2000 r-xp 00000000 00:00 0      [vdso]
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 5);
        assert_eq!(
            maps[0],
            MapEntry {
                start: 0x55d0c8a02000,
                end: 0x55d0c8a07000,
                offset: 0x2000,
                dev: (0xfd << 32) | 1,
                inode: 1234,
                path: "/usr/bin/cat".into(),
                deleted: false,
            }
        );
        assert!(maps[0].is_file());
        assert_eq!(maps[1].path, "");
        assert!(!maps[1].is_file());
        assert_eq!(maps[2].path, "/tmp/my lib.so");
        assert!(maps[2].deleted);
        assert_eq!(maps[3].path, "[vdso]");
        assert!(!maps[3].is_file());
        assert_eq!(maps[4].path, "[vsyscall]");
        assert!(parse_maps("garbage line\n").is_empty());
    }

    #[test]
    fn dev_t_equals_stat() {
        use std::os::unix::fs::MetadataExt;
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let exe = std::env::current_exe().unwrap();
        let md = std::fs::metadata(&exe).unwrap();
        let e = maps.iter().find(|m| m.inode == md.ino()).unwrap();
        assert_eq!(e.dev_t(), md.dev());
    }
}
