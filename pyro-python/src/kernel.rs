//! Where the BPF walker finds a task's thread pointer: the byte offset of
//! `task_struct.thread.fsbase` (x86_64) or `task_struct.thread.uw.tp_value` (arm64) in the running
//! kernel, read from its BTF (`/sys/kernel/btf/vmlinux`). The BPF side reads
//! `*(bpf_get_current_task() + offset)` with `bpf_probe_read_kernel` (aya-ebpf has no CO-RE, so
//! the offset is computed here and handed over like the per-process config).
//!
//! Only the parts of the BTF format needed to follow struct members are parsed
//! (`include/uapi/linux/btf.h`): the header, the type section (every kind is stepped over by its
//! size) and the string section.

use std::path::{Path, PathBuf};

/// Path of the running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// Errors reading the kernel's BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data is not BTF this parser understands.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// The struct or member path does not exist in this kernel's BTF.
    #[error("no {path} in BTF")]
    NotFound {
        /// `struct.member.member`.
        path: String,
    },
    /// No thread pointer rule for this architecture.
    #[error("no thread pointer rule for {0}")]
    UnsupportedArch(&'static str),
}

/// One BTF type: kind, name, `size_or_type` and, for structs and unions, members
/// `(name offset, type id, offset in bits)`.
#[derive(Debug, Clone)]
struct BtfType {
    kind: u32,
    name: u32,
    size_or_type: u32,
    members: Vec<(u32, u32, u32)>,
}

/// The parsed type and string sections.
#[derive(Debug)]
pub struct Btf {
    /// Index 0 is the void type.
    types: Vec<BtfType>,
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

impl Btf {
    /// Reads and parses a BTF file (little-endian).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses BTF bytes (little-endian, as the kernel exposes it on little-endian machines).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let bad = BtfError::Malformed;
        let magic = data.get(0..2).ok_or(bad("short header"))?;
        if u16::from_le_bytes([magic[0], magic[1]]) != BTF_MAGIC {
            return Err(bad("bad magic (or big-endian)"));
        }
        let hdr_len = u32_at(data, 4).ok_or(bad("short header"))? as usize;
        let field = |i: usize| u32_at(data, 8 + 4 * i).map(|v| v as usize);
        let (type_off, type_len, str_off, str_len) = match (field(0), field(1), field(2), field(3))
        {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => return Err(bad("short header")),
        };
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types_data = section(type_off, type_len).ok_or(bad("type section out of range"))?;
        let strings = section(str_off, str_len)
            .ok_or(bad("string section out of range"))?
            .to_vec();
        let mut types = vec![BtfType {
            kind: 0,
            name: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < types_data.len() {
            let word = |i: usize| u32_at(types_data, at + 4 * i).ok_or(bad("truncated type"));
            let (name, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
                3 => 12,          // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for m in 0..vlen {
                        let base = at + 12 * m;
                        let w = |i: usize| {
                            u32_at(types_data, base + 4 * i).ok_or(bad("truncated member"))
                        };
                        let offset = w(2)?;
                        // With kind_flag, the top 8 bits are the bit-field size.
                        let bits = if kind_flag {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        members.push((w(0)?, w(1)?, bits));
                    }
                    12 * vlen
                }
                6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF … FUNC, FLOAT, TYPE_TAG
                _ => return Err(bad("unknown type kind")),
            };
            at += extra;
            types.push(BtfType {
                kind,
                name,
                size_or_type,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> Option<&BtfType> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset of member `name` in `t`, looking into anonymous struct/union members.
    fn member_bits(&self, t: &BtfType, name: &[u8], depth: u32) -> Option<(u64, u32)> {
        for &(m_name, m_type, bits) in &t.members {
            if self.name(m_name) == name {
                return Some((u64::from(bits), m_type));
            }
        }
        if depth > 8 {
            return None;
        }
        for &(m_name, m_type, bits) in &t.members {
            if m_name == 0
                && let Some(inner) = self.resolve(m_type)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some((b, ty)) = self.member_bits(inner, name, depth + 1)
            {
                return Some((u64::from(bits) + b, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (`["thread", "fsbase"]`) in struct `name`.
    pub fn member_offset(&self, name: &str, path: &[&str]) -> Result<u64, BtfError> {
        let not_found = || BtfError::NotFound {
            path: format!("{name}.{}", path.join(".")),
        };
        let mut t = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name) == name.as_bytes())
            .ok_or_else(not_found)?;
        let mut bits = 0u64;
        for (i, member) in path.iter().enumerate() {
            let (b, ty) = self
                .member_bits(t, member.as_bytes(), 0)
                .ok_or_else(not_found)?;
            bits += b;
            if i + 1 < path.len() {
                t = self
                    .resolve(ty)
                    .filter(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION))
                    .ok_or_else(not_found)?;
            }
        }
        Ok(bits / 8)
    }
}

/// Offset of the thread pointer in `task_struct` for this machine's architecture:
/// `thread.fsbase` on x86_64, `thread.uw.tp_value` on aarch64.
pub fn thread_pointer_offset(btf: &Btf) -> Result<u64, BtfError> {
    match std::env::consts::ARCH {
        "x86_64" => btf.member_offset("task_struct", &["thread", "fsbase"]),
        "aarch64" => btf.member_offset("task_struct", &["thread", "uw", "tp_value"]),
        other => Err(BtfError::UnsupportedArch(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF: `struct inner { long a; long fsbase; }`,
    /// `struct task_struct { int x; union { int y; }; struct inner thread; }` (anonymous
    /// union in front, a typedef on the way).
    fn sample() -> Vec<u8> {
        let strings = b"\0inner\0a\0fsbase\0task_struct\0x\0thread\0y\0inner_t\0long\0";
        let s = |name: &str| {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .expect("string")
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: INT long (8 bytes)
        push(&[s("long"), 1 << 24, 8, 64]);
        // 2: struct inner { a @0, fsbase @64 bits }
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 16]);
        push(&[s("a"), 1, 0, s("fsbase"), 1, 64]);
        // 3: typedef inner_t -> 2
        push(&[s("inner_t"), KIND_TYPEDEF << 24, 2]);
        // 4: anonymous union { y }
        push(&[0, (KIND_UNION << 24) | 1, 4]);
        push(&[s("y"), 1, 0]);
        // 5: struct task_struct { x @0, <anon union> @64, thread @128 }
        push(&[s("task_struct"), (KIND_STRUCT << 24) | 3, 32]);
        push(&[s("x"), 1, 0, 0, 4, 64, s("thread"), 3, 128]);
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        out.extend_from_slice(&24u32.to_le_bytes());
        for v in [
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn member_offsets() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(
            btf.member_offset("task_struct", &["thread", "fsbase"])
                .unwrap(),
            24
        );
        assert_eq!(btf.member_offset("task_struct", &["y"]).unwrap(), 8);
        assert_eq!(btf.member_offset("task_struct", &["thread"]).unwrap(), 16);
        assert!(matches!(
            btf.member_offset("task_struct", &["thread", "nope"]),
            Err(BtfError::NotFound { .. })
        ));
        assert!(btf.member_offset("nope", &["x"]).is_err());
    }

    #[test]
    fn malformed() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0]).is_err());
        let mut data = sample();
        data.truncate(data.len() - 60);
        assert!(Btf::parse(&data).is_err());
        let mut bad_magic = sample();
        bad_magic[0] = 0;
        assert!(Btf::parse(&bad_magic).is_err());
    }
}
