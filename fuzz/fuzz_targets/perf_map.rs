//! The perf-map reader must never panic on any file and stay within its caps: the input is
//! served as `/tmp/perf-1.map` of a fake process whose only executable mapping is anonymous,
//! and addresses in that mapping are symbolized.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pyro_symbolize::{Symbolizer, SymbolizerConfig};

const START: u64 = 0x7f00_0000_0000;

fn procfs() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("pyro-fuzz-perf-map-{}", std::process::id()));
        std::fs::create_dir_all(root.join("1/root/tmp")).unwrap();
        std::fs::write(
            root.join("1/maps"),
            format!("{START:x}-{:x} r-xp 00000000 00:00 0 \n", START + (1 << 24)),
        )
        .unwrap();
        std::fs::write(root.join("1/status"), "Name:\tfuzz\nNSpid:\t1\n").unwrap();
        root
    })
}

fuzz_target!(|data: &[u8]| {
    let root = procfs();
    std::fs::write(root.join("1/root/tmp/perf-1.map"), data).unwrap();
    let sym = Symbolizer::new(SymbolizerConfig {
        proc_root: root.clone(),
        ..SymbolizerConfig::default()
    });
    let addrs: Vec<u64> = data
        .chunks(8)
        .take(64)
        .map(|c| START + (c.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)) % (1 << 24)))
        .collect();
    let frames = sym.symbolize_user(1, &addrs);
    assert_eq!(frames.len(), addrs.len());
});
