//! Reading another process's memory: the [`Memory`] trait the walker and detection read
//! through, and [`ProcMem`], its `/proc/PID/mem` implementation.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Errors reading process memory.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// `/proc/PID/mem` could not be opened (process gone, or no permission: reading another
    /// process's memory needs `CAP_SYS_PTRACE` or the same user under Yama scope 0/1 rules).
    #[error("open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A read failed (unmapped address, or the process exited).
    #[error("read {len} bytes at {addr:#x} in pid {pid}: {source}")]
    Read {
        /// The process.
        pid: u32,
        /// Start of the read.
        addr: u64,
        /// Bytes requested.
        len: usize,
        /// The cause.
        source: std::io::Error,
    },
}

/// Read access to a process's address space.
pub trait Memory {
    /// Fills `buf` from `addr`; fails unless every byte was read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// Reads a little-endian `u64` (a pointer on the 64-bit targets the offsets are for).
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads one byte.
    fn read_u8(&self, addr: u64) -> Result<u8, MemError> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }
}

/// A process's memory through `/proc/PID/mem` (positioned reads on one open file).
#[derive(Debug)]
pub struct ProcMem {
    pid: u32,
    file: File,
}

impl ProcMem {
    /// Opens `/proc/PID/mem`.
    pub fn open(pid: u32) -> Result<Self, MemError> {
        let path = PathBuf::from(format!("/proc/{pid}/mem"));
        let file = File::open(&path).map_err(|source| MemError::Open { path, source })?;
        Ok(Self { pid, file })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Memory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.file
            .read_exact_at(buf, addr)
            .map_err(|source| MemError::Read {
                pid: self.pid,
                addr,
                len: buf.len(),
                source,
            })
    }
}
