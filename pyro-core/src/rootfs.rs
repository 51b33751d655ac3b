//! Opening files inside another process's root directory without leaving it.
//!
//! A profiler running as root on the host reads a container's files (the ELF of a mapping,
//! debug files, JIT perf maps) through `/proc/PID/root/<path>`. Path resolution through that
//! magic link enters the container's root, but any *absolute* symbolic link met on the way is
//! resolved against the reader's root — the host's — so a container could make the agent read
//! host files by planting `/usr/lib/debug/…` or `/tmp/perf-1.map` as a symlink to one.
//!
//! [`RootDir`] resolves every path inside a root directory: with `openat2(2)` and
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` relative to an fd of the root (absolute symlinks
//! and `..` stay inside it, as if the reader were chrooted there), or, on kernels without
//! `openat2` (before 5.6, or a seccomp filter refusing it), by resolving symlinks by hand one
//! component at a time from that fd, with the same result. [`open_mapped`] opens a file a
//! process has mapped through `/proc/PID/map_files/<start>-<end>`: the very file the process
//! runs, with no path resolution inside the process's root at all.
//!
//! Every open takes a size cap: a file over it is refused with [`RootfsError::TooLarge`], which
//! names the file and the cap. Only regular files are returned; opens are non-blocking, so a
//! FIFO planted where a file is expected cannot hang the reader.
//!
//! ```
//! use pyro_core::rootfs::RootDir;
//!
//! // This process's own root; for another process `RootDir::of_process("/proc", pid)`.
//! let root = RootDir::of_process("/proc", std::process::id()).unwrap();
//! // Paths are relative to the root whether or not they start with `/`, and `..` cannot
//! // climb above it.
//! let status = root.read("/../../proc/self/status", 1 << 20).unwrap();
//! assert!(status.starts_with(b"Name:"));
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Symbolic links followed while resolving one path by hand, as the kernel's limit
/// (`MAXSYMLINKS`, 40); more is `ELOOP`.
const MAX_SYMLINKS: usize = 40;
/// `openat2` returns `EAGAIN` when a rename or mount raced with `..` resolution under
/// `RESOLVE_IN_ROOT`; retried this many times.
const MAX_AGAIN: usize = 8;

/// Errors opening or reading a file inside a root directory. Each names the root and the path.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The root directory itself could not be opened (process gone, no permission).
    #[error("cannot open root directory {root}: {source}")]
    Root {
        /// The root directory (`/proc/PID/root`).
        root: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file could not be opened inside the root (missing, permission, too many symlinks).
    #[error("cannot open {path} inside {root}: {source}")]
    Open {
        /// The root directory.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The path names something other than a regular file (directory, FIFO, device, socket).
    #[error("{path} inside {root} is not a regular file")]
    NotRegular {
        /// The root directory.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
    },
    /// The file is bigger than the cap the caller set for it.
    #[error("{path} inside {root} is {size} bytes, over the cap of {limit} bytes")]
    TooLarge {
        /// The root directory.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
        /// The file's size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// Reading the opened file failed.
    #[error("cannot read {path} inside {root}: {source}")]
    Read {
        /// The root directory.
        root: PathBuf,
        /// The path inside it.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl RootfsError {
    /// Whether the root or the file does not exist (the ordinary outcome of probing candidate
    /// paths, or of a process that exited).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Root { source, .. } | Self::Open { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
            }
            _ => false,
        }
    }
}

/// A directory used as the root for every path opened through it (a process's
/// `/proc/PID/root`, or any directory): absolute symlinks and `..` met while resolving a path
/// stay inside it.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    root: PathBuf,
}

impl RootDir {
    /// Opens `root` (following symlinks, so `/proc/PID/root` enters the process's root).
    pub fn open(root: impl AsRef<Path>) -> Result<Self, RootfsError> {
        let root = root.as_ref();
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootfsError::Root {
            root: root.to_owned(),
            source: e.into(),
        })?;
        Ok(Self {
            fd,
            root: root.to_owned(),
        })
    }

    /// The root directory of process `pid` as procfs (mounted at `proc_root`, normally
    /// `/proc`) shows it: `<proc_root>/<pid>/root`.
    pub fn of_process(proc_root: impl AsRef<Path>, pid: u32) -> Result<Self, RootfsError> {
        Self::open(proc_root.as_ref().join(pid.to_string()).join("root"))
    }

    /// The root directory as it was named when opened.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens the regular file at `path` inside the root (a leading `/` is ignored: paths are
    /// always relative to the root) for reading; refuses it when it is over `limit` bytes.
    pub fn open_file(&self, path: impl AsRef<Path>, limit: u64) -> Result<File, RootfsError> {
        let (file, size) = self.open_regular(path.as_ref())?;
        if size > limit {
            return Err(self.too_large(path.as_ref(), size, limit));
        }
        Ok(file)
    }

    /// Opens the regular file at `path` inside the root to read at most its first `limit`
    /// bytes, whatever its size: for files where a prefix is still useful (an append-only
    /// log). Returns the capped reader and the file's full size.
    pub fn open_prefix(
        &self,
        path: impl AsRef<Path>,
        limit: u64,
    ) -> Result<(io::Take<File>, u64), RootfsError> {
        let (file, size) = self.open_regular(path.as_ref())?;
        Ok((file.take(limit), size))
    }

    /// Reads the whole regular file at `path` inside the root, refusing it when it is (or grows
    /// while read to) over `limit` bytes.
    pub fn read(&self, path: impl AsRef<Path>, limit: u64) -> Result<Vec<u8>, RootfsError> {
        let path = path.as_ref();
        let file = self.open_file(path, limit)?;
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| RootfsError::Read {
                root: self.root.clone(),
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(self.too_large(path, bytes.len() as u64, limit));
        }
        Ok(bytes)
    }

    fn too_large(&self, path: &Path, size: u64, limit: u64) -> RootfsError {
        RootfsError::TooLarge {
            root: self.root.clone(),
            path: path.to_owned(),
            size,
            limit,
        }
    }

    fn open_regular(&self, path: &Path) -> Result<(File, u64), RootfsError> {
        let fd = open_in_root(self.fd.as_fd(), path.as_os_str().as_bytes()).map_err(|e| {
            RootfsError::Open {
                root: self.root.clone(),
                path: path.to_owned(),
                source: e.into(),
            }
        })?;
        regular(fd).map_err(|e| match e {
            Irregular::NotRegular => RootfsError::NotRegular {
                root: self.root.clone(),
                path: path.to_owned(),
            },
            Irregular::Stat(source) => RootfsError::Open {
                root: self.root.clone(),
                path: path.to_owned(),
                source,
            },
        })
    }
}

/// Opens the file process `pid` has mapped at `start..end` through
/// `<proc_root>/<pid>/map_files/<start>-<end>` (lower-case hex, as `/proc/PID/maps` shows the
/// range): the file the process really runs, even when deleted, replaced, or in another mount
/// namespace, with no path resolution inside the process's root. Needs `CAP_SYS_ADMIN` (or
/// `CAP_CHECKPOINT_RESTORE`) in the initial user namespace; refused when over `limit` bytes.
pub fn open_mapped(
    proc_root: impl AsRef<Path>,
    pid: u32,
    start: u64,
    end: u64,
    limit: u64,
) -> Result<File, RootfsError> {
    let root = proc_root.as_ref().join(pid.to_string()).join("map_files");
    let name = PathBuf::from(format!("{start:x}-{end:x}"));
    let open_err = |source: io::Error| RootfsError::Open {
        root: root.clone(),
        path: name.clone(),
        source,
    };
    let fd = rustix::fs::open(root.join(&name), read_flags(), Mode::empty())
        .map_err(|e| open_err(e.into()))?;
    let (file, size) = regular(fd).map_err(|e| match e {
        Irregular::NotRegular => RootfsError::NotRegular {
            root: root.clone(),
            path: name.clone(),
        },
        Irregular::Stat(source) => open_err(source),
    })?;
    if size > limit {
        return Err(RootfsError::TooLarge {
            root,
            path: name,
            size,
            limit,
        });
    }
    Ok(file)
}

/// Whether this kernel lets us use `openat2` with `RESOLVE_IN_ROOT` (5.6+, not blocked by
/// seccomp); without it paths are resolved by hand. Probed once.
pub fn openat2_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let probe = rustix::fs::openat2(
            rustix::fs::CWD,
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        );
        // Old container runtimes' seccomp profiles answer EPERM for unknown syscalls.
        let supported = !matches!(probe, Err(Errno::NOSYS | Errno::PERM));
        if !supported {
            tracing::debug!("openat2 unavailable; resolving paths inside process roots by hand");
        }
        supported
    })
}

/// Flags of every file opened for reading: no blocking on a FIFO, no controlling terminal.
fn read_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY
}

fn open_in_root(root: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    if openat2_supported() {
        match open_openat2(root, path) {
            Err(Errno::NOSYS) => {}
            other => return other,
        }
    }
    open_by_hand(root, path, read_flags())
}

fn open_openat2(root: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    let rel = relative(path);
    let mut again = 0;
    loop {
        match rustix::fs::openat2(
            root,
            rel,
            read_flags(),
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN) if again < MAX_AGAIN => again += 1,
            other => return other,
        }
    }
}

/// `path` without leading slashes, `.` when that leaves nothing.
fn relative(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|&b| b != b'/').unwrap_or(path.len());
    if start == path.len() {
        b"."
    } else {
        &path[start..]
    }
}

/// Resolves `path` inside `root` one component at a time, as `RESOLVE_IN_ROOT` does: each
/// component opened `O_PATH | O_NOFOLLOW` relative to the directory before it; a symlink's
/// target read and its components queued (absolute targets restart at the root); `..` pops to
/// the directory we came from (never the kernel's `..`, so renames and mounts cannot lead
/// out); the last component opened with `flags | O_NOFOLLOW` (a symlink swapped in after the
/// check fails with `ELOOP` rather than being followed). Magic links (procfs) are read as text
/// and resolved inside the root like any symlink.
fn open_by_hand(root: BorrowedFd<'_>, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    let mut pending: VecDeque<Vec<u8>> = components(path).collect();
    // Directories below the root, outermost first; the current directory is the last one.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == b".." {
            stack.pop();
            continue;
        }
        let dir = stack.last().map_or(root, |fd| fd.as_fd());
        let fd = rustix::fs::openat(
            dir,
            &name[..],
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        match kind {
            rustix::fs::FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                let target = target.as_bytes();
                if target.first() == Some(&b'/') {
                    stack.clear();
                }
                for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(c);
                }
            }
            rustix::fs::FileType::Directory if !pending.is_empty() => stack.push(fd),
            _ if !pending.is_empty() => return Err(Errno::NOTDIR),
            _ => {
                let dir = stack.last().map_or(root, |fd| fd.as_fd());
                return rustix::fs::openat(dir, &name[..], flags | OFlags::NOFOLLOW, Mode::empty());
            }
        }
    }
    // The path ended on a directory (empty, `/`, a trailing `..` or a symlink to a directory).
    let dir = stack.last().map_or(root, |fd| fd.as_fd());
    rustix::fs::openat(dir, ".", flags, Mode::empty())
}

/// The non-empty components of `path` other than `.`.
fn components(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

enum Irregular {
    NotRegular,
    Stat(io::Error),
}

/// `fd` as a file when it is a regular file, with its size.
fn regular(fd: OwnedFd) -> Result<(File, u64), Irregular> {
    let file = File::from(fd);
    let md = file.metadata().map_err(Irregular::Stat)?;
    if !md.is_file() {
        return Err(Irregular::NotRegular);
    }
    Ok((file, md.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// A root with `etc/passwd` holding `inside`, and a host-side twin outside it: `base`
    /// holds `root/` and `etc/passwd` (`outside`).
    fn layout() -> (tempfile::TempDir, PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("a/b/c/d")).unwrap();
        std::fs::write(root.join("etc/passwd"), "inside\n").unwrap();
        std::fs::create_dir_all(base.path().join("etc")).unwrap();
        std::fs::write(base.path().join("etc/passwd"), "outside\n").unwrap();
        (base, root)
    }

    /// Both resolvers: `openat2` (when this kernel has it) and by hand.
    fn read_both(root: &RootDir, path: &str) -> Vec<Result<String, Errno>> {
        let mut out = Vec::new();
        if openat2_supported() {
            out.push(open_openat2(root.fd.as_fd(), path.as_bytes()));
        }
        out.push(open_by_hand(root.fd.as_fd(), path.as_bytes(), read_flags()));
        out.into_iter()
            .map(|r| {
                r.map(|fd| {
                    let mut s = String::new();
                    File::from(fd).read_to_string(&mut s).unwrap();
                    s
                })
            })
            .collect()
    }

    #[test]
    fn relative_and_absolute_symlinks_stay_inside_the_root() {
        let (base, root) = layout();
        // Relative, climbing far above the root.
        symlink("../../../../etc/passwd", root.join("a/b/c/d/rel")).unwrap();
        // Absolute: on the host it names the host's file; inside the root, the root's.
        let host_twin = base.path().join("etc/passwd");
        symlink(&host_twin, root.join("abs_host_path")).unwrap();
        symlink("/etc/passwd", root.join("abs")).unwrap();
        // A directory symlink to `/` followed by more components.
        symlink("/", root.join("a/up")).unwrap();
        // A chain: symlink to a symlink.
        symlink("/abs", root.join("chain")).unwrap();
        let dir = RootDir::open(&root).unwrap();
        for path in [
            "a/b/c/d/rel",
            "/a/b/c/d/rel",
            "abs",
            "a/up/etc/passwd",
            "a/up/a/up/../../../etc/passwd",
            "chain",
            "../../../../../etc/passwd",
        ] {
            for got in read_both(&dir, path) {
                assert_eq!(got.as_deref(), Ok("inside\n"), "{path}");
            }
            let mut s = String::new();
            dir.open_file(path, 1 << 20)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "inside\n", "{path}");
        }
        // The absolute path of the host twin does not exist inside the root: not found, and
        // never the host file.
        for got in read_both(&dir, "abs_host_path") {
            assert_eq!(got, Err(Errno::NOENT));
        }
        let err = dir.open_file("abs_host_path", 1 << 20).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        // A plain `open` through the same directory follows the absolute link to the host.
        assert_eq!(
            std::fs::read_to_string(root.join("abs_host_path")).unwrap(),
            "outside\n"
        );
    }

    #[test]
    fn symlink_loops_fail_and_non_regular_files_are_refused() {
        let (_base, root) = layout();
        symlink("/loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let dir = RootDir::open(&root).unwrap();
        for got in read_both(&dir, "loop1") {
            assert_eq!(got, Err(Errno::LOOP));
        }
        // A FIFO does not block the open, and is refused.
        let fifo = root.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &*c,
            rustix::fs::FileType::Fifo,
            Mode::RUSR,
            0,
        )
        .unwrap();
        assert!(matches!(
            dir.open_file("fifo", 1 << 20),
            Err(RootfsError::NotRegular { .. })
        ));
        assert!(matches!(
            dir.open_file("a/b", 1 << 20),
            Err(RootfsError::NotRegular { .. })
        ));
        // A file component used as a directory.
        for got in read_both(&dir, "etc/passwd/x") {
            assert_eq!(got, Err(Errno::NOTDIR));
        }
    }

    #[test]
    fn size_caps_name_the_file_and_the_cap() {
        let (_base, root) = layout();
        let dir = RootDir::open(&root).unwrap();
        let err = dir.open_file("etc/passwd", 3).unwrap_err();
        match &err {
            RootfsError::TooLarge {
                path, size, limit, ..
            } => assert_eq!(
                (path.as_path(), *size, *limit),
                (Path::new("etc/passwd"), 7, 3)
            ),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("etc/passwd"), "{err}");
        assert!(err.to_string().contains("cap of 3 bytes"), "{err}");
        assert_eq!(dir.read("etc/passwd", 7).unwrap(), b"inside\n");
        assert!(matches!(
            dir.read("etc/passwd", 6),
            Err(RootfsError::TooLarge { .. })
        ));
        let (mut prefix, size) = dir.open_prefix("etc/passwd", 3).unwrap();
        let mut s = String::new();
        prefix.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), size), ("ins", 7));
    }

    #[test]
    fn mapped_files_are_the_mapped_file() {
        // This test binary's own executable mapping, through map_files (root only), is the
        // file `/proc/self/exe` names.
        let maps = crate::proc::exec_maps("/proc", std::process::id()).unwrap();
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        let m = maps.iter().find(|m| m.inode == exe.ino()).unwrap();
        match open_mapped("/proc", std::process::id(), m.start, m.end, u64::MAX) {
            Ok(f) => {
                let md = f.metadata().unwrap();
                assert_eq!((md.dev(), md.ino()), (exe.dev(), exe.ino()));
                let err = open_mapped("/proc", std::process::id(), m.start, m.end, 10);
                assert!(matches!(err, Err(RootfsError::TooLarge { limit: 10, .. })));
            }
            // Unprivileged: map_files is refused, and says so.
            Err(RootfsError::Open { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::PermissionDenied, "{source}");
            }
            Err(other) => panic!("{other}"),
        }
        let gone = open_mapped("/proc", std::process::id(), 1, 2, u64::MAX).unwrap_err();
        assert!(gone.is_not_found(), "{gone}");
    }
}
