//! JIT frames named from the runtime's perf map: `node --perf-basic-prof` running a known hot
//! JavaScript function.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pyro_symbolize::{JIT_MODULE, Symbolizer, SymbolizerConfig};

const SCRIPT: &str = r#"
function hotLoopPyro(n) {
    let s = 0;
    for (let i = 0; i < n; i++) s = (s * 31 + i) % 1000003;
    return s;
}
let t = 0;
for (;;) { t += hotLoopPyro(1e6); if (t === -1) console.log(t); }
"#;

#[test]
fn node_perf_basic_prof_names_its_hot_function() {
    let Some(node) = pyro_testkit::tool("node") else {
        return;
    };
    // (In a scratch directory: V8 may write `isolate-*-v8.log` files into its working directory.)
    let cwd = tempfile::tempdir().unwrap();
    let mut child = pyro_testkit::spawn(
        Command::new(node)
            .args(["--perf-basic-prof", "-e", SCRIPT])
            .current_dir(cwd.path())
            .stdout(Stdio::null()),
    )
    .unwrap();
    let pid = child.id();
    let map = format!("/tmp/perf-{pid}.map");
    // Wait until V8 has compiled the function (interpreted, then optimized) and said so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&map).unwrap_or_default();
        if let Some(line) = text.lines().rev().find(|l| l.contains("hotLoopPyro")) {
            let start = line.split(' ').next().unwrap();
            break u64::from_str_radix(start.trim_start_matches("0x"), 16).unwrap();
        }
        assert!(Instant::now() < deadline, "no hotLoopPyro in {map}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let sym = Symbolizer::new(SymbolizerConfig::default());
    let f = sym.symbolize_user(pid, &[addr + 1]).remove(0);
    assert!(f.name.contains("hotLoopPyro"), "{f:?}");
    assert_eq!(&*f.module, JIT_MODULE);
    assert!(f.resolved);
    // The code lives in anonymous executable memory (what the perf map is for).
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let (range, _) = l.split_once(' ').unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
            a <= addr && addr < b
        })
        .unwrap();
    assert_eq!(
        line.split_whitespace().count(),
        5,
        "anonymous mapping: {line}"
    );
    assert_eq!(sym.perf_map_garbage_lines(), 0);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&map);
}
