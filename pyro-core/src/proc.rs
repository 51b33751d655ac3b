//! The one `/proc` reader of every pyro crate, on the `procfs` crate: what the collector,
//! the symbolizer, CPython detection and process discovery read about a process.
//!
//! Every function takes the procfs mount point (`/proc` normally; the host's procfs mounted
//! elsewhere when the agent runs in a container) and returns `None` or an error when the
//! process is gone, so callers treat "exited meanwhile" as an ordinary outcome.
//!
//! ```
//! let me = std::process::id();
//! let stat = pyro_core::proc::stat("/proc", me).unwrap();
//! assert!(!stat.kernel_thread);
//! let maps = pyro_core::proc::exec_maps("/proc", me).unwrap();
//! assert!(maps.iter().any(|m| m.path.is_some()));
//! ```

use std::io;
use std::path::{Path, PathBuf};

use procfs::process::{MMPermissions, MMapPath, MemoryMaps};
use procfs::{FromBufRead, FromRead};

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u32 = 0x0020_0000;

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Start time in clock ticks after boot: with the pid, identifies a process across pid reuse.
    pub start_time: u64,
    /// Whether it is a kernel thread.
    pub kernel_thread: bool,
}

/// Start time and kernel-thread flag of `pid`; `None` when the process is gone (or its `stat`
/// cannot be read or parsed).
pub fn stat(root: impl AsRef<Path>, pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read(pid_path(root.as_ref(), pid, "stat")).ok()?)
}

/// [`stat`] of a `/proc/PID/stat` text already read; `None` when it does not parse.
pub fn parse_stat(text: &[u8]) -> Option<ProcStat> {
    let stat = procfs::process::Stat::from_read(text).ok()?;
    Some(ProcStat {
        start_time: stat.starttime,
        kernel_thread: stat.flags & PF_KTHREAD != 0,
    })
}

/// The process's `comm` (its main thread's name), `None` when gone or empty.
pub fn comm(root: impl AsRef<Path>, pid: u32) -> Option<String> {
    let mut s = std::fs::read_to_string(pid_path(root.as_ref(), pid, "comm")).ok()?;
    while s.ends_with('\n') {
        s.pop();
    }
    (!s.is_empty()).then_some(s)
}

/// The text of `/proc/PID/cgroup` (for [`crate::cgroup::container_id_from_cgroup`]).
pub fn cgroup(root: impl AsRef<Path>, pid: u32) -> io::Result<String> {
    std::fs::read_to_string(pid_path(root.as_ref(), pid, "cgroup"))
}

/// The real user id of `pid` (`Uid:` of `/proc/PID/status`).
pub fn uid(root: impl AsRef<Path>, pid: u32) -> io::Result<u32> {
    let bytes = std::fs::read(pid_path(root.as_ref(), pid, "status"))?;
    procfs::process::Status::from_read(&bytes[..])
        .map(|s| s.ruid)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// The command line of `pid`: its arguments (empty ones left out).
pub fn cmdline(root: impl AsRef<Path>, pid: u32) -> io::Result<Vec<String>> {
    let raw = std::fs::read(pid_path(root.as_ref(), pid, "cmdline"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// One executable mapping of a process (a line of `/proc/PID/maps` with `x` permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecMap {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset of the mapping in its file.
    pub offset: u64,
    /// `(major << 32) | minor` of the device holding the file.
    pub dev: u64,
    /// Inode of the file, 0 for anonymous memory.
    pub inode: u64,
    /// The file, as the process sees it (without the kernel's ` (deleted)` suffix); `None` for
    /// anonymous memory and pseudo-paths such as `[vdso]`.
    pub path: Option<PathBuf>,
    /// Whether the file was deleted or replaced after it was mapped.
    pub deleted: bool,
    /// The pseudo-path of a non-file mapping (`[vdso]`, `[heap]`, …), if any.
    pub pseudo: Option<String>,
}

/// The executable mappings of `pid`, sorted by start address.
pub fn exec_maps(root: impl AsRef<Path>, pid: u32) -> io::Result<Vec<ExecMap>> {
    let bytes = std::fs::read(pid_path(root.as_ref(), pid, "maps"))?;
    parse_exec_maps(&bytes)
}

/// [`exec_maps`] of a `/proc/PID/maps` text already read. A line that does not parse is
/// skipped (and does not cost its neighbours), so a `maps` file from a fake or damaged procfs
/// gives what can be read of it.
pub fn parse_exec_maps(text: &[u8]) -> io::Result<Vec<ExecMap>> {
    let mut maps = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        // procfs parses whole files; one line at a time keeps a bad line from hiding the rest.
        if let Ok(parsed) = MemoryMaps::from_buf_read(line) {
            maps.extend(parsed);
        }
    }
    let mut out: Vec<ExecMap> = maps
        .into_iter()
        .filter(|m| m.perms.contains(MMPermissions::EXECUTE) && m.address.1 > m.address.0)
        .map(|m| {
            let (path, deleted, pseudo) = match m.pathname {
                MMapPath::Path(p) => {
                    let text = p.to_string_lossy();
                    match text.strip_suffix(" (deleted)") {
                        Some(stripped) => (Some(PathBuf::from(stripped)), true, None),
                        None => (Some(p), false, None),
                    }
                }
                MMapPath::Anonymous => (None, false, None),
                MMapPath::Vdso => (None, false, Some("[vdso]".to_owned())),
                MMapPath::Vsyscall => (None, false, Some("[vsyscall]".to_owned())),
                MMapPath::Heap => (None, false, Some("[heap]".to_owned())),
                MMapPath::Stack => (None, false, Some("[stack]".to_owned())),
                MMapPath::Other(s) => (None, false, Some(s)),
                _ => (None, false, None),
            };
            ExecMap {
                start: m.address.0,
                end: m.address.1,
                offset: m.offset,
                dev: (u64::from(m.dev.0 as u32) << 32) | u64::from(m.dev.1 as u32),
                inode: m.inode,
                path,
                deleted,
                pseudo,
            }
        })
        .collect();
    out.sort_unstable_by_key(|m| m.start);
    Ok(out)
}

fn pid_path(root: &Path, pid: u32, file: &str) -> PathBuf {
    root.join(pid.to_string()).join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        #[link_name = "getuid"]
        fn libc_getuid() -> u32;
    }

    #[test]
    fn parses_exec_lines_only_with_deleted_and_pseudo_paths() {
        let text = b"\
55d0c0a00000-55d0c0a2e000 r--p 00000000 fd:01 1234 /usr/bin/app
55d0c0a2e000-55d0c0b00000 r-xp 0002e000 fd:01 1234 /usr/bin/app (deleted)
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7ffd1a5f0000-7ffd1a5f2000 r-xp 00000000 00:00 0                          [vdso]
garbage line
7f1000000000-7f1000100000 r-xp 00001000 08:02 99 /lib/x86_64-linux-gnu/libc.so.6
";
        let maps = parse_exec_maps(text).unwrap();
        assert_eq!(maps.len(), 4, "{maps:?}");
        assert_eq!(maps[0].path.as_deref(), Some(Path::new("/usr/bin/app")));
        assert!(maps[0].deleted);
        assert_eq!((maps[0].offset, maps[0].dev), (0x2e000, (0xfd << 32) | 1));
        assert_eq!((maps[1].path.as_deref(), maps[1].inode), (None, 0));
        assert_eq!(maps[2].inode, 99);
        assert_eq!(maps[3].pseudo.as_deref(), Some("[vdso]"));
    }

    #[test]
    fn stat_with_a_comm_holding_spaces_and_parentheses() {
        let line = b"42 (a (weird) name) S 1 42 42 0 -1 2097216 0 0 0 0 0 0 0 0 20 0 1 0 12345 \
            10000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                start_time: 12345,
                kernel_thread: true
            })
        );
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let s = stat("/proc", me).unwrap();
        assert!(!s.kernel_thread && s.start_time > 0);
        assert!(comm("/proc", me).is_some());
        assert!(cgroup("/proc", me).is_ok());
        // SAFETY: getuid has no preconditions.
        assert_eq!(uid("/proc", me).unwrap(), unsafe { libc_getuid() });
        assert!(!cmdline("/proc", me).unwrap().is_empty());
        assert!(stat("/proc", u32::MAX).is_none());
        // Kernel threads carry PF_KTHREAD (kthreadd is pid 2 on Linux).
        if let Some(k) = stat("/proc", 2) {
            assert!(k.kernel_thread);
        }
    }
}
