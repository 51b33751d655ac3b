//! Kernel symbols from `/proc/kallsyms`, module symbols included.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Errors loading kernel symbols.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// `kallsyms` could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The module name given to symbols of the kernel image itself.
pub const KERNEL_MODULE: &str = "kernel";

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Offset of the name in the arena.
    name: u32,
    len: u32,
    /// Index into `modules`.
    module: u32,
}

/// The kernel's function symbols (`t`/`T`/`w`/`W`… — data symbols `b B d D r R` are dropped),
/// sorted by address. Symbols are sizeless, so an address resolves to the nearest symbol at or
/// below it.
///
/// ```no_run
/// let ksyms = pyro_symbolize::KernelSymbols::load("/proc/kallsyms")?;
/// if let Some((name, module)) = ksyms.lookup(0xffffffff81000000) {
///     println!("{name} in {module}");
/// }
/// # Ok::<(), pyro_symbolize::KernelError>(())
/// ```
pub struct KernelSymbols {
    addrs: Box<[u64]>,
    entries: Box<[Entry]>,
    arena: String,
    modules: Box<[Arc<str>]>,
    names: Box<[OnceLock<Arc<str>>]>,
}

impl std::fmt::Debug for KernelSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelSymbols")
            .field("symbols", &self.addrs.len())
            .field("modules", &self.modules.len())
            .finish_non_exhaustive()
    }
}

impl KernelSymbols {
    /// Reads and sorts `kallsyms` at `path` (normally `/proc/kallsyms`). When addresses are
    /// hidden (`kptr_restrict`, all zero) the table is empty and a warning is logged.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KernelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KernelError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table = Self::parse(&text);
        if table.is_empty() {
            tracing::warn!(path = %path.display(), "no usable kernel symbols (kptr_restrict?); kernel frames stay unresolved");
        }
        Ok(table)
    }

    /// An empty table: every lookup misses.
    pub fn empty() -> Self {
        Self::parse("")
    }

    /// Parses kallsyms text (`ADDR TYPE NAME [\t[MODULE]]` per line).
    pub fn parse(text: &str) -> Self {
        let mut modules: Vec<Arc<str>> = vec![Arc::from(KERNEL_MODULE)];
        let mut arena = String::new();
        let mut raw: Vec<(u64, Entry)> = Vec::new();
        for line in text.lines() {
            let mut parts = line.split_ascii_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if matches!(ty, "b" | "B" | "d" | "D" | "r" | "R") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let module = match parts.next() {
                Some(m) => {
                    let m = m.trim_start_matches('[').trim_end_matches(']');
                    match modules.iter().rposition(|x| &**x == m) {
                        Some(i) => i,
                        None => {
                            modules.push(Arc::from(m));
                            modules.len() - 1
                        }
                    }
                }
                None => 0,
            };
            let (Ok(off), Ok(len), Ok(module)) = (
                u32::try_from(arena.len()),
                u32::try_from(name.len()),
                u32::try_from(module),
            ) else {
                break;
            };
            arena.push_str(name);
            raw.push((
                addr,
                Entry {
                    name: off,
                    len,
                    module,
                },
            ));
        }
        // kallsyms is mostly sorted, but module and BPF symbols need not be.
        raw.sort_by_key(|&(a, _)| a);
        let names = std::iter::repeat_with(OnceLock::new)
            .take(raw.len())
            .collect();
        Self {
            addrs: raw.iter().map(|&(a, _)| a).collect(),
            entries: raw.iter().map(|&(_, e)| e).collect(),
            arena,
            modules: modules.into_boxed_slice(),
            names,
        }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether there are no symbols (addresses hidden or file empty).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The symbol at or below `addr` and its module ([`KERNEL_MODULE`] for the kernel image,
    /// else the module name from kallsyms' `[module]` column).
    pub fn lookup(&self, addr: u64) -> Option<(&Arc<str>, &Arc<str>)> {
        let i = self.addrs.partition_point(|&a| a <= addr).checked_sub(1)?;
        let e = self.entries[i];
        let name = self.names[i].get_or_init(|| {
            let start = e.name as usize;
            Arc::from(self.arena.get(start..start + e.len as usize).unwrap_or(""))
        });
        let module = self
            .modules
            .get(e.module as usize)
            .unwrap_or(&self.modules[0]);
        Some((name, module))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sorts_with_modules() {
        let text = "\
ffffffffc0a00000 t nf_hook\t[nf_tables]
ffffffff81000000 T _stext
ffffffff81000100 T do_syscall_64
ffffffff82000000 D some_data
ffffffffc0a00100 t nf_other\t[nf_tables]
ffffffffc0b00000 t bpf_prog_abc_foo\t[bpf]
bad line
";
        let k = KernelSymbols::parse(text);
        assert_eq!(k.len(), 5);
        let (n, m) = k.lookup(0xffffffff81000150).unwrap();
        assert_eq!((&**n, &**m), ("do_syscall_64", KERNEL_MODULE));
        // Data symbols are dropped, so this still resolves to the text symbol below it.
        let (n, _) = k.lookup(0xffffffff82000010).unwrap();
        assert_eq!(&**n, "do_syscall_64");
        let (n, m) = k.lookup(0xffffffffc0a00108).unwrap();
        assert_eq!((&**n, &**m), ("nf_other", "nf_tables"));
        let (n, m) = k.lookup(0xffffffffc0b00001).unwrap();
        assert_eq!((&**n, &**m), ("bpf_prog_abc_foo", "bpf"));
        assert!(k.lookup(0x1000).is_none());
        assert!(k.lookup(0).is_none());
    }

    #[test]
    fn hidden_addresses_give_empty_table() {
        let k = KernelSymbols::parse("0000000000000000 T _stext\n0000000000000000 t foo\n");
        assert!(k.is_empty());
        assert!(k.lookup(0xffffffff81000000).is_none());
    }
}
