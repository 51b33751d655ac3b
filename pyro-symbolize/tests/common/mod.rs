//! Helpers shared by the tests that compare with binutils.
#![allow(dead_code, reason = "each test uses part of it")]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// One level as both sides print it: function, file (`??` when unknown), line (0 when unknown).
pub(crate) type Level = (String, String, u32);

/// What `addr2line -a -f -i [-C] -e file` prints for `addrs` (one invocation, addresses on
/// stdin): per address its levels, innermost first.
pub(crate) fn binutils(
    addr2line: &Path,
    file: &Path,
    addrs: &[u64],
    demangle: bool,
) -> Vec<Vec<Level>> {
    let mut child = Command::new(addr2line)
        .args(["-a", "-f", "-i"])
        .args(demangle.then_some("-C"))
        .arg("-e")
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut result: Vec<Vec<Level>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if is_address_line(line) {
            result.push(Vec::new());
            continue;
        }
        let function = line.to_owned();
        let location = lines.next().unwrap_or("??:0");
        let location = location.split(" (discriminator").next().unwrap_or(location);
        let (file, line) = location.rsplit_once(':').unwrap_or((location, "0"));
        let line = line.parse().unwrap_or(0);
        let function = if function == "??" {
            String::new()
        } else {
            function
        };
        result
            .last_mut()
            .unwrap()
            .push((function, file.to_owned(), line));
    }
    // A lone "?? / ??:0" level means binutils knows nothing.
    for levels in &mut result {
        if levels.len() == 1 && levels[0] == (String::new(), "??".into(), 0) {
            levels.clear();
        }
    }
    result
}

fn is_address_line(line: &str) -> bool {
    line.len() == 18 && line.starts_with("0x") && line[2..].bytes().all(|b| b.is_ascii_hexdigit())
}
