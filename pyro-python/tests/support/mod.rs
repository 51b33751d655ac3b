//! Shared test helpers: finding the CPython builds the tests run on.

#![allow(dead_code, reason = "each test file uses a part")]

pub(crate) mod dwarf;

use std::path::PathBuf;

/// Whether missing tools must fail the test (`PYRO_REQUIRE_TOOLS=1`, set by CI).
pub(crate) fn tools_required() -> bool {
    std::env::var("PYRO_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// `path` if it exists; else `None` with a skip message, or a panic when `required` and
/// `PYRO_REQUIRE_TOOLS=1`.
pub(crate) fn file(path: impl Into<PathBuf>, required: bool, how: &str) -> Option<PathBuf> {
    let path = path.into();
    if path.exists() {
        return Some(path);
    }
    assert!(
        !(required && tools_required()),
        "{} is missing and PYRO_REQUIRE_TOOLS=1 ({how})",
        path.display()
    );
    eprintln!("SKIPPED: {} is missing ({how})", path.display());
    None
}

/// The pyenv root (`$PYENV_ROOT`, else `~/.pyenv`).
pub(crate) fn pyenv_root() -> PathBuf {
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pyenv")
        })
}

/// The newest pyenv build of `3.minor`: its prefix (`…/versions/3.X.Y`).
pub(crate) fn pyenv_prefix(minor: u8) -> Option<PathBuf> {
    let dir = pyenv_root().join("versions");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&format!("3.{minor}."))?;
            let patch: u32 = rest.parse().ok()?;
            Some((patch, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// A CPython build to test on.
#[derive(Debug, Clone)]
pub(crate) struct Python {
    /// Label for messages (`debian-3.11`, `pyenv-3.11.7`).
    pub(crate) label: String,
    /// Minor version.
    pub(crate) minor: u8,
    /// The interpreter executable.
    pub(crate) exe: PathBuf,
    /// The file holding the interpreter (libpython for shared builds, else the executable), as
    /// seen from the host.
    pub(crate) interpreter: PathBuf,
    /// The root directory the interpreter runs in (`chroot`), `None` for the host's.
    pub(crate) root: Option<PathBuf>,
}

/// Debian's `python3.11` (apt `python3.11`; required in CI).
pub(crate) fn debian_311() -> Option<Python> {
    let exe = file("/usr/bin/python3.11", true, "apt-get install python3.11")?;
    Some(Python {
        label: "debian-3.11".into(),
        minor: 11,
        interpreter: exe.clone(),
        exe,
        root: None,
    })
}

/// pyenv's build of `3.minor` (3.11 is on every machine of this project and required in CI;
/// other minors are used when present).
pub(crate) fn pyenv(minor: u8) -> Option<Python> {
    let required = minor == 11;
    let Some(prefix) = pyenv_prefix(minor) else {
        assert!(
            !(required && tools_required()),
            "no pyenv 3.{minor} build under {} and PYRO_REQUIRE_TOOLS=1",
            pyenv_root().display()
        );
        eprintln!(
            "UNCHECKED: no pyenv 3.{minor} build under {}",
            pyenv_root().display()
        );
        return None;
    };
    let exe = prefix.join(format!("bin/python3.{minor}"));
    let lib = prefix.join(format!("lib/libpython3.{minor}.so.1.0"));
    let interpreter = if lib.exists() { lib } else { exe.clone() };
    Some(Python {
        label: format!(
            "pyenv-{}",
            prefix.file_name().unwrap_or_default().to_string_lossy()
        ),
        minor,
        exe,
        interpreter,
        root: None,
    })
}

/// Where `.ci/python-roots.sh` builds the Debian `sid` root holding CPython 3.13–3.15
/// (`PYRO_PYTHON_ROOT`, else `/tmp/pyro-python-roots/sid`).
pub(crate) fn sid_root() -> PathBuf {
    std::env::var_os("PYRO_PYTHON_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/pyro-python-roots/sid"))
}

/// `python3.minor` of the `sid` root, run as `chroot ROOT /usr/bin/python3.X …`; a skip when the
/// root is missing, a failure under `PYRO_REQUIRE_TOOLS=1` (CI builds it with
/// `.ci/python-roots.sh`).
pub(crate) fn sid(minor: u8) -> Option<Python> {
    let root = sid_root();
    let exe = PathBuf::from(format!("/usr/bin/python3.{minor}"));
    let interpreter = file(
        root.join(exe.strip_prefix("/").expect("absolute")),
        true,
        ".ci/python-roots.sh builds the sid root",
    )?;
    Some(Python {
        label: format!("sid-3.{minor}"),
        minor,
        exe,
        interpreter,
        root: Some(root),
    })
}

impl Python {
    /// A command running `script` (a file of this crate's `tests/`) with this interpreter. For
    /// a root, the script's directory is copied into it first (under `/tmp/pyro-tests-PID/`,
    /// keeping the path from `tests/` on), and the command is `chroot ROOT EXE SCRIPT`.
    pub(crate) fn command(&self, script: &std::path::Path) -> std::process::Command {
        let Some(root) = &self.root else {
            let mut cmd = std::process::Command::new(&self.exe);
            cmd.arg(script);
            return cmd;
        };
        let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
        let rel = script.strip_prefix(&tests).expect("a script under tests/");
        let inside = PathBuf::from(format!("/tmp/pyro-tests-{}", std::process::id())).join("tests");
        let dir = rel.parent().expect("a file");
        let dst = root
            .join(inside.strip_prefix("/").expect("absolute"))
            .join(dir);
        std::fs::create_dir_all(&dst).expect("create the script directory in the root");
        for entry in std::fs::read_dir(tests.join(dir))
            .expect("read the script directory")
            .flatten()
        {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), dst.join(entry.file_name()))
                    .expect("copy into the root");
            }
        }
        let mut cmd = std::process::Command::new("chroot");
        cmd.arg(root).arg(&self.exe).arg(inside.join(rel));
        cmd
    }
}
