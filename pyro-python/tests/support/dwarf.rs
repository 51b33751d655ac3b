//! Struct layouts read from the DWARF of a debug build of libpython, the independent reference
//! the offset table is checked against.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};

type R<'a> = EndianSlice<'a, RunTimeEndian>;

/// One member of a struct: byte offset, bit offset of a bit-field (from the start of the
/// struct, DWARF 5 `DW_AT_data_bit_offset`), and where its type is.
#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    bit_offset: Option<u64>,
    bit_size: Option<u64>,
    ty: Option<UnitOffset>,
}

/// A struct's size and members, as DWARF describes it.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// `sizeof`.
    pub(crate) size: u64,
    members: HashMap<String, Member>,
    nested: HashMap<String, Layout>,
}

impl Layout {
    /// Byte offset of `path` (`["gilstate", "autoTSSkey"]`) from the start of the struct.
    pub(crate) fn offset(&self, path: &[&str]) -> Option<u64> {
        let (first, rest) = path.split_first()?;
        let m = self.members.get(*first)?;
        if rest.is_empty() {
            return Some(m.offset);
        }
        Some(m.offset + self.nested.get(*first)?.offset(rest)?)
    }

    /// `(bit offset from the start of the struct, bit size)` of a bit-field at `path`.
    pub(crate) fn bitfield(&self, path: &[&str]) -> Option<(u64, u64)> {
        let (first, rest) = path.split_first()?;
        let m = self.members.get(*first)?;
        if rest.is_empty() {
            return Some((m.bit_offset?, m.bit_size?));
        }
        let (bit, size) = self.nested.get(*first)?.bitfield(rest)?;
        Some((m.offset * 8 + bit, size))
    }

    /// The nested struct layout of member `name`.
    pub(crate) fn member_layout(&self, name: &str) -> Option<&Layout> {
        self.nested.get(name)
    }
}

/// The debug file for `binary`: itself when it has `.debug_info`, else the
/// `/usr/lib/debug/.build-id/xx/yyyy.debug` file named by its build id.
pub(crate) fn debug_file_for(binary: &Path) -> Option<PathBuf> {
    debug_file_in(Path::new("/"), binary)
}

/// As [`debug_file_for`], with the build-id directory under `root` (a chroot's own
/// `/usr/lib/debug`).
pub(crate) fn debug_file_in(root: &Path, binary: &Path) -> Option<PathBuf> {
    let data = std::fs::read(binary).ok()?;
    let file = object::File::parse(&*data).ok()?;
    if file
        .section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
    {
        return Some(binary.to_path_buf());
    }
    let id = file.build_id().ok()??;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let path = root.join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ));
    path.is_file().then_some(path)
}

/// Layouts of the named structs (struct tags or typedef names), first complete definition wins.
pub(crate) fn layouts(path: &Path, names: &[&str]) -> HashMap<String, Layout> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file = object::File::parse(&*data).expect("parse ELF");
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(match file.section_by_name(id.name()) {
            Some(s) => s.uncompressed_data().unwrap_or(Cow::Borrowed(&[])),
            None => Cow::Borrowed(&[]),
        })
    })
    .expect("load DWARF");
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let mut out = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().expect("unit header") {
        if out.len() == names.len() {
            break;
        }
        let unit = dwarf.unit(header).expect("unit");
        let mut entries = unit.entries();
        while let Some(entry) = entries.next_dfs().expect("entry") {
            let tag = entry.tag();
            if tag != gimli::DW_TAG_structure_type && tag != gimli::DW_TAG_typedef {
                continue;
            }
            let Some(name) = entry
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| dwarf.attr_string(&unit, v).ok())
            else {
                continue;
            };
            let name = name.to_string_lossy().into_owned();
            if !names.contains(&name.as_str()) || out.contains_key(&name) {
                continue;
            }
            let Some(st) = resolve_struct(&unit, entry.offset()) else {
                continue;
            };
            if let Some(layout) = struct_layout(&dwarf, &unit, st, 0) {
                out.insert(name, layout);
            }
        }
    }
    out
}

/// Follows typedef/const/volatile from `off` to a complete struct definition in `unit`.
fn resolve_struct(unit: &gimli::Unit<R<'_>>, mut off: UnitOffset) -> Option<UnitOffset> {
    for _ in 0..16 {
        let e = unit.entry(off).ok()?;
        match e.tag() {
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                if e.attr_value(gimli::DW_AT_declaration).is_some() {
                    return None;
                }
                return Some(off);
            }
            gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
                match e.attr_value(gimli::DW_AT_type)? {
                    AttributeValue::UnitRef(o) => off = o,
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    None
}

fn struct_layout(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    off: UnitOffset,
    depth: u32,
) -> Option<Layout> {
    let mut tree = unit.entries_tree(Some(off)).ok()?;
    let root = tree.root().ok()?;
    let size = root
        .entry()
        .attr_value(gimli::DW_AT_byte_size)
        .and_then(|v| v.udata_value())?;
    let mut members = HashMap::new();
    let mut children = root.children();
    while let Some(child) = children.next().ok()? {
        let e = child.entry();
        if e.tag() != gimli::DW_TAG_member {
            continue;
        }
        let name = e
            .attr_value(gimli::DW_AT_name)
            .and_then(|v| dwarf.attr_string(unit, v).ok())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("<anon@{}>", members.len()));
        let offset = e
            .attr_value(gimli::DW_AT_data_member_location)
            .and_then(|v| v.udata_value())
            .unwrap_or(0);
        let bit_offset = e
            .attr_value(gimli::DW_AT_data_bit_offset)
            .and_then(|v| v.udata_value());
        let bit_size = e
            .attr_value(gimli::DW_AT_bit_size)
            .and_then(|v| v.udata_value());
        let ty = match e.attr_value(gimli::DW_AT_type) {
            Some(AttributeValue::UnitRef(o)) => Some(o),
            _ => None,
        };
        members.insert(
            name,
            Member {
                offset,
                bit_offset,
                bit_size,
                ty,
            },
        );
    }
    let mut nested = HashMap::new();
    if depth < 4 {
        for (name, m) in &members {
            if let Some(st) = m.ty.and_then(|t| resolve_struct(unit, t))
                && let Some(l) = struct_layout(dwarf, unit, st, depth + 1)
            {
                nested.insert(name.clone(), l);
            }
        }
    }
    Some(Layout {
        size,
        members,
        nested,
    })
}
