//! The offset table checked against the DWARF of debug builds of CPython: Debian's
//! `libpython3.11-dbg` (the build-id debug file of `/usr/bin/python3.11`) and the pyenv builds,
//! which keep their DWARF (3.11 on every machine; 3.8–3.13 where installed).

mod support;

use std::collections::HashMap;

use pyro_python::layout::{
    NONE, OWNER_INCOMPLETE, PyOffsets, STACKREF_TAG_BITS, STATE_ASCII_BIT, STATE_COMPACT_BIT,
    STATE_KIND_MASK, STATE_KIND_SHIFT, offsets_for,
};
use support::dwarf::{self, Layout};

const STRUCTS: &[&str] = &[
    "_PyRuntimeState",
    "PyInterpreterState",
    "PyThreadState",
    "_PyCFrame",
    "_PyInterpreterFrame",
    "PyFrameObject",
    "PyCodeObject",
    "PyASCIIObject",
    "PyCompactUnicodeObject",
    "PyTypeObject",
    "PyTupleObject",
    "PyObject",
    "_Py_tss_t",
];

/// The table row as the DWARF of a build says it should be.
fn from_dwarf(l: &HashMap<String, Layout>, minor: u8, label: &str) -> PyOffsets {
    let get = |s: &str, path: &[&str]| -> u16 {
        let v = l
            .get(s)
            .unwrap_or_else(|| panic!("{label}: no struct {s} in DWARF"))
            .offset(path)
            .unwrap_or_else(|| panic!("{label}: no member {s}.{}", path.join(".")));
        u16::try_from(v).expect("offset fits u16")
    };
    let size = |s: &str| -> u16 {
        u16::try_from(
            l.get(s)
                .unwrap_or_else(|| panic!("{label}: no struct {s}"))
                .size,
        )
        .expect("size fits u16")
    };
    let old = minor <= 10;
    PyOffsets {
        runtime_tss_key: match minor {
            ..=11 => get("_PyRuntimeState", &["gilstate", "autoTSSkey"]),
            12..=14 => get("_PyRuntimeState", &["autoTSSkey"]),
            // 3.15 keeps the bound thread state in the static TLS variable `_Py_tss_gilstate`.
            _ => {
                let runtime = l.get("_PyRuntimeState").expect("_PyRuntimeState");
                assert_eq!(runtime.offset(&["autoTSSkey"]), None, "{label}");
                NONE
            }
        },
        runtime_interpreters_head: get("_PyRuntimeState", &["interpreters", "head"]),
        interp_threads_head: if old {
            get("PyInterpreterState", &["tstate_head"])
        } else {
            get("PyInterpreterState", &["threads", "head"])
        },
        tstate_next: get("PyThreadState", &["next"]),
        tstate_thread_id: get("PyThreadState", &["thread_id"]),
        tstate_native_thread_id: if old {
            NONE
        } else {
            get("PyThreadState", &["native_thread_id"])
        },
        tstate_frame: match minor {
            ..=10 => get("PyThreadState", &["frame"]),
            11 | 12 => get("PyThreadState", &["cframe"]),
            _ => get("PyThreadState", &["current_frame"]),
        },
        cframe_current_frame: match minor {
            11 | 12 => get("_PyCFrame", &["current_frame"]),
            _ => NONE,
        },
        frame_code: match minor {
            ..=10 => get("PyFrameObject", &["f_code"]),
            11 | 12 => get("_PyInterpreterFrame", &["f_code"]),
            _ => get("_PyInterpreterFrame", &["f_executable"]),
        },
        frame_back: if old {
            get("PyFrameObject", &["f_back"])
        } else {
            get("_PyInterpreterFrame", &["previous"])
        },
        frame_owner: if old {
            NONE
        } else {
            get("_PyInterpreterFrame", &["owner"])
        },
        frame_localsplus: if old {
            get("PyFrameObject", &["f_localsplus"])
        } else {
            get("_PyInterpreterFrame", &["localsplus"])
        },
        code_filename: get("PyCodeObject", &["co_filename"]),
        code_name: get("PyCodeObject", &["co_name"]),
        code_qualname: if old {
            NONE
        } else {
            get("PyCodeObject", &["co_qualname"])
        },
        code_argcount: get("PyCodeObject", &["co_argcount"]),
        code_varnames: if old {
            get("PyCodeObject", &["co_varnames"])
        } else {
            get("PyCodeObject", &["co_localsplusnames"])
        },
        code_firstlineno: get("PyCodeObject", &["co_firstlineno"]),
        unicode_length: get("PyASCIIObject", &["length"]),
        unicode_state: get("PyASCIIObject", &["state"]),
        unicode_ascii_data: size("PyASCIIObject"),
        unicode_compact_data: size("PyCompactUnicodeObject"),
        object_type: get("PyObject", &["ob_type"]),
        type_name: get("PyTypeObject", &["tp_name"]),
        tuple_items: get("PyTupleObject", &["ob_item"]),
        tss_key: get("_Py_tss_t", &["_key"]),
        // Not struct members: the frame model follows from which members exist (checked
        // above), the owner value is an enumerator (checked below where DWARF has it).
        ..*offsets_for(3, minor).expect("row")
    }
}

fn check(label: &str, minor: u8, debug_file: &std::path::Path) {
    let l = dwarf::layouts(debug_file, STRUCTS);
    let row = offsets_for(3, minor).expect("row");
    let want = from_dwarf(&l, minor, label);
    assert_eq!(
        *row,
        want,
        "{label}: table row 3.{minor} differs from the DWARF of {}",
        debug_file.display()
    );
    // The string state bits (relative to the state word).
    let ascii = l.get("PyASCIIObject").expect("PyASCIIObject");
    let base = u64::from(row.unicode_state) * 8;
    let bit = |name: &str| {
        let (off, size) = ascii
            .bitfield(&["state", name])
            .unwrap_or_else(|| panic!("{label}: no state.{name}"));
        (off - base, size)
    };
    assert_eq!(
        bit("kind"),
        (
            u64::from(STATE_KIND_SHIFT),
            u64::from(STATE_KIND_MASK.count_ones())
        ),
        "{label}"
    );
    assert_eq!(
        bit("compact"),
        (u64::from(STATE_COMPACT_BIT.trailing_zeros()), 1),
        "{label}"
    );
    assert_eq!(
        bit("ascii"),
        (u64::from(STATE_ASCII_BIT.trailing_zeros()), 1),
        "{label}"
    );
    if minor >= 12 {
        assert_eq!(row.owner_incomplete, OWNER_INCOMPLETE, "{label}");
    }
    // From 3.14 `f_executable` is a `_PyStackRef` (a union of one `uintptr_t bits`): the
    // walker clears its tag bits.
    let executable_is_stackref = l
        .get("_PyInterpreterFrame")
        .and_then(|f| f.member_layout("f_executable"))
        .is_some_and(|r| r.offset(&["bits"]) == Some(0));
    assert_eq!(
        row.frame_code_tag_bits,
        if executable_is_stackref {
            STACKREF_TAG_BITS
        } else {
            0
        },
        "{label}: f_executable is{} a _PyStackRef",
        if executable_is_stackref { "" } else { " not" }
    );
    eprintln!(
        "CHECKED: 3.{minor} row against {label} ({})",
        debug_file.display()
    );
}

#[test]
fn debian_311_matches_dwarf() {
    let Some(py) = support::debian_311() else {
        return;
    };
    let Some(debug) = dwarf::debug_file_for(&py.interpreter) else {
        assert!(
            !support::tools_required(),
            "no debug file for {} and PYRO_REQUIRE_TOOLS=1 (apt-get install python3.11-dbg)",
            py.interpreter.display()
        );
        eprintln!(
            "SKIPPED: no debug file for {} (apt-get install python3.11-dbg)",
            py.interpreter.display()
        );
        return;
    };
    check(&py.label, 11, &debug);
}

/// Debian's debug (`Py_DEBUG`) build `libpython3.11d.so` from `libpython3.11-dbg`: another
/// compilation of 3.11.2, with its own DWARF; the layouts the walker reads are the same.
#[test]
fn debian_311_pydebug_matches_dwarf() {
    let Some(lib) = support::file(
        "/usr/lib/x86_64-linux-gnu/libpython3.11d.so.1.0",
        true,
        "apt-get install libpython3.11-dbg",
    ) else {
        return;
    };
    let debug = dwarf::debug_file_for(&lib).expect("libpython3.11d keeps its DWARF");
    check("debian-3.11d", 11, &debug);
}

#[test]
fn pyenv_builds_match_dwarf() {
    let mut checked = Vec::new();
    for minor in 8..=13 {
        let Some(py) = support::pyenv(minor) else {
            continue;
        };
        let Some(debug) = dwarf::debug_file_for(&py.interpreter) else {
            eprintln!("UNCHECKED: {} has no DWARF", py.interpreter.display());
            continue;
        };
        check(&py.label, minor, &debug);
        checked.push(py.label);
    }
    eprintln!("checked: {checked:?}");
}

/// Debian sid's 3.13, 3.14 and 3.15 in the root `.ci/python-roots.sh` builds
/// (`PYRO_PYTHON_ROOT`, default `/tmp/pyro-python-roots/sid`): the debug file of each
/// `python3.X` executable (which links libpython statically) from `python3.X-dbg`.
#[test]
fn sid_313_to_315_match_dwarf() {
    for minor in [13, 14, 15] {
        let Some(py) = support::sid(minor) else {
            continue;
        };
        let root = py.root.clone().expect("a root");
        let debug = dwarf::debug_file_in(&root, &py.interpreter);
        let Some(debug) = debug else {
            assert!(
                !support::tools_required(),
                "{}: no debug file in {} and PYRO_REQUIRE_TOOLS=1 (.ci/python-roots.sh installs python3.{minor}-dbg)",
                py.label,
                root.display()
            );
            eprintln!("SKIPPED: {}: no debug file", py.label);
            continue;
        };
        check(&py.label, minor, &debug);
    }
}

#[test]
fn table_covers_3_8_to_3_15_only() {
    for minor in 0..=20 {
        assert_eq!(
            offsets_for(3, minor).is_some(),
            (8..=15).contains(&minor),
            "3.{minor}"
        );
    }
    assert!(offsets_for(2, 7).is_none());
    assert!(offsets_for(4, 0).is_none());
}

/// `layout` (now `pyro_ebpf_common::python`) must stay `core`-only: the BPF program uses it.
#[test]
fn layout_module_uses_core_only() {
    let src = include_str!("../../pyro-ebpf-common/src/python.rs");
    for banned in [
        "std::", "String", "Vec<", "Box<", "format!", "alloc::", "HashMap",
    ] {
        assert!(
            !src.contains(banned),
            "pyro-ebpf-common/src/python.rs uses {banned}"
        );
    }
    assert_eq!(pyro_python::PyProcConfig::SIZE, 112);
}

/// 3.15 keeps the bound thread state in `_Py_tss_gilstate` (static TLS): the offset from the
/// thread pointer that detection decodes from `PyGILState_GetThisThreadState` equals the one the
/// debug file's symbol table gives (x86_64 TLS variant II: the executable's block ends at the
/// thread pointer, so the offset is `st_value - roundup(PT_TLS.p_memsz, p_align)`).
#[test]
fn sid_315_tls_offset_matches_symtab() {
    use object::{Object, ObjectSection, ObjectSymbol, read::elf::ProgramHeader};

    let Some(py) = support::sid(15) else {
        return;
    };
    let root = py.root.clone().expect("a root");
    let exe_data = std::fs::read(&py.interpreter).expect("read python3.15");
    let exe = object::read::elf::ElfFile64::<object::LittleEndian>::parse(&*exe_data)
        .expect("parse python3.15");
    let func = exe
        .dynamic_symbols()
        .find(|s| s.name() == Ok("PyGILState_GetThisThreadState"))
        .expect("PyGILState_GetThisThreadState is exported");
    let text = exe
        .sections()
        .find(|s| (s.address()..s.address() + s.size()).contains(&func.address()))
        .expect("its section");
    let code = &text.data().expect("section data")[(func.address() - text.address()) as usize..];
    let decoded = match pyro_python::detect::decode_tls_load(&code[..32]) {
        Some(pyro_python::detect::TlsLoad::ThreadPointer(off)) => i64::from(off),
        other => panic!("{}: unexpected TLS load {other:?}", py.label),
    };
    let endian = object::LittleEndian;
    let tls = exe
        .elf_program_headers()
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_TLS)
        .expect("a PT_TLS segment");
    let (memsz, align) = (tls.p_memsz(endian), tls.p_align(endian).max(1));
    let block = memsz.div_ceil(align) * align;
    let Some(debug) = dwarf::debug_file_in(&root, &py.interpreter) else {
        assert!(!support::tools_required(), "{}: no debug file", py.label);
        return;
    };
    let debug_data = std::fs::read(&debug).expect("read the debug file");
    let debug_elf = object::File::parse(&*debug_data).expect("parse the debug file");
    let sym = debug_elf
        .symbols()
        .find(|s| s.name() == Ok("_Py_tss_gilstate"))
        .expect("_Py_tss_gilstate in the debug symtab");
    assert_eq!(sym.kind(), object::SymbolKind::Tls);
    let want = sym.address() as i64 - block as i64;
    assert_eq!(
        decoded, want,
        "{}: decoded {decoded}, symtab {want}",
        py.label
    );
    eprintln!(
        "CHECKED: {} _Py_tss_gilstate at thread pointer {decoded}",
        py.label
    );
}

/// 3.13+ carry their own offsets: `_PyRuntime` starts with `_Py_DebugOffsets`, filled in at
/// build time with `offsetof` of the members remote debuggers read (the `.PyRuntime` section of
/// the executable holds them as initialised data). Every table field that has a counterpart
/// there equals CPython's own value: a second reference besides the DWARF of the structs.
#[test]
fn sid_313_to_315_match_py_debug_offsets() {
    use object::{Object, ObjectSection, ObjectSymbol};

    for minor in [13, 14, 15] {
        let Some(py) = support::sid(minor) else {
            continue;
        };
        let root = py.root.clone().expect("a root");
        let Some(debug) = dwarf::debug_file_in(&root, &py.interpreter) else {
            assert!(!support::tools_required(), "{}: no debug file", py.label);
            continue;
        };
        let layouts = dwarf::layouts(&debug, &["_Py_DebugOffsets"]);
        let layout = layouts
            .get("_Py_DebugOffsets")
            .unwrap_or_else(|| panic!("{}: no _Py_DebugOffsets in DWARF", py.label));
        let data = std::fs::read(&py.interpreter).expect("read the executable");
        let exe = object::File::parse(&*data).expect("parse the executable");
        let runtime = exe
            .dynamic_symbols()
            .find(|s| s.name() == Ok("_PyRuntime"))
            .expect("_PyRuntime is exported")
            .address();
        let section = exe
            .sections()
            .find(|s| (s.address()..s.address() + s.size()).contains(&runtime))
            .expect("the section of _PyRuntime");
        let bytes = section.data().expect("initialised data");
        let base = (runtime - section.address()) as usize;
        assert_eq!(&bytes[base..base + 8], b"xdebugpy", "{}: cookie", py.label);
        let value = |path: &[&str]| -> u16 {
            let off = layout
                .offset(path)
                .unwrap_or_else(|| panic!("{}: no _Py_DebugOffsets.{}", py.label, path.join(".")))
                as usize;
            let v = u64::from_le_bytes(bytes[base + off..base + off + 8].try_into().unwrap());
            u16::try_from(v).expect("an offset")
        };
        let row = offsets_for(3, minor).expect("row");
        let pairs: [(&str, u16, &[&str]); 22] = [
            (
                "runtime_interpreters_head",
                row.runtime_interpreters_head,
                &["runtime_state", "interpreters_head"],
            ),
            (
                "interp_threads_head",
                row.interp_threads_head,
                &["interpreter_state", "threads_head"],
            ),
            ("tstate_next", row.tstate_next, &["thread_state", "next"]),
            (
                "tstate_thread_id",
                row.tstate_thread_id,
                &["thread_state", "thread_id"],
            ),
            (
                "tstate_native_thread_id",
                row.tstate_native_thread_id,
                &["thread_state", "native_thread_id"],
            ),
            (
                "tstate_frame",
                row.tstate_frame,
                &["thread_state", "current_frame"],
            ),
            (
                "frame_back",
                row.frame_back,
                &["interpreter_frame", "previous"],
            ),
            (
                "frame_code",
                row.frame_code,
                &["interpreter_frame", "executable"],
            ),
            (
                "frame_owner",
                row.frame_owner,
                &["interpreter_frame", "owner"],
            ),
            (
                "frame_localsplus",
                row.frame_localsplus,
                &["interpreter_frame", "localsplus"],
            ),
            (
                "code_filename",
                row.code_filename,
                &["code_object", "filename"],
            ),
            ("code_name", row.code_name, &["code_object", "name"]),
            (
                "code_qualname",
                row.code_qualname,
                &["code_object", "qualname"],
            ),
            (
                "code_firstlineno",
                row.code_firstlineno,
                &["code_object", "firstlineno"],
            ),
            (
                "code_argcount",
                row.code_argcount,
                &["code_object", "argcount"],
            ),
            (
                "code_varnames",
                row.code_varnames,
                &["code_object", "localsplusnames"],
            ),
            ("object_type", row.object_type, &["pyobject", "ob_type"]),
            ("type_name", row.type_name, &["type_object", "tp_name"]),
            ("tuple_items", row.tuple_items, &["tuple_object", "ob_item"]),
            (
                "unicode_state",
                row.unicode_state,
                &["unicode_object", "state"],
            ),
            (
                "unicode_length",
                row.unicode_length,
                &["unicode_object", "length"],
            ),
            (
                "unicode_ascii_data",
                row.unicode_ascii_data,
                &["unicode_object", "asciiobject_size"],
            ),
        ];
        for (field, ours, path) in pairs {
            assert_eq!(
                ours,
                value(path),
                "{}: {field} differs from _Py_DebugOffsets.{}",
                py.label,
                path.join(".")
            );
        }
        eprintln!(
            "CHECKED: 3.{minor} row against {}'s _Py_DebugOffsets ({} fields)",
            py.label,
            pairs.len()
        );
    }
}
