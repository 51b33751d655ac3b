//! pprof written by `ProfileBuilder` is read by Go's own pprof tool, and real Go profiles
//! survive a decode → encode → decode round trip.

use std::path::Path;

use pyro_core::pprof::{DEFAULT_MAX_DECODED_SIZE, ProfileBuilder, decode, encode, encode_gzip};

#[test]
fn go_tool_pprof_reads_builder_output() {
    let mut b = ProfileBuilder::new(&[("samples", "count"), ("cpu", "nanoseconds")]);
    b.set_period("cpu", "nanoseconds", 10_000_000);
    b.add_folded(&["main", "handler", "parse"], &[3, 30_000_000]);
    b.add_folded(&["main", "handler", "parse"], &[2, 20_000_000]);
    b.add_folded(&["main", "idle"], &[1, 10_000_000]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("built.pb.gz");
    std::fs::write(&path, encode_gzip(&b.build(), 6)).unwrap();
    let Some(raw) = pyro_testkit::go_pprof(&["-raw"], &path) else {
        return;
    };
    // Parse Go's `-raw` listing: samples as "<values>: <location ids leaf first>", locations
    // as "<id>: <addr> M=<mapping> <function> <file>:<line> s=<start>".
    let mut locations = std::collections::HashMap::new();
    let mut samples = Vec::new();
    let mut section = "";
    for line in raw.lines() {
        match line.trim() {
            "Samples:" | "Locations" | "Mappings" => section = line.trim(),
            l if section == "Samples:" && l.contains(':') => {
                let (values, ids) = l.split_once(':').unwrap();
                let values: Vec<i64> = values
                    .split_whitespace()
                    .map(|v| v.parse().unwrap())
                    .collect();
                let ids: Vec<String> = ids.split_whitespace().map(str::to_owned).collect();
                samples.push((values, ids));
            }
            l if section == "Locations" => {
                let (id, rest) = l.split_once(':').unwrap();
                let function = rest.split_whitespace().nth(2).unwrap().to_owned();
                locations.insert(id.trim().to_owned(), function);
            }
            _ => {}
        }
    }
    assert!(
        raw.contains("PeriodType: cpu nanoseconds") && raw.contains("Period: 10000000"),
        "{raw}"
    );
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    let mut got: Vec<(String, Vec<i64>)> = samples
        .into_iter()
        .map(|(values, ids)| {
            let mut names: Vec<&str> = ids.iter().map(|id| locations[id].as_str()).collect();
            names.reverse();
            (names.join(";"), values)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("main;handler;parse".to_owned(), vec![5, 50_000_000]),
            ("main;idle".to_owned(), vec![1, 10_000_000]),
        ],
        "{raw}"
    );
}

#[test]
fn shared_testdata_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/pprof");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("../shared/testdata/pprof exists") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let first = decode(&bytes, DEFAULT_MAX_DECODED_SIZE)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!first.sample.is_empty(), "{} has samples", path.display());
        let again = decode(&encode(&first), DEFAULT_MAX_DECODED_SIZE).unwrap();
        assert_eq!(first, again, "{}", path.display());
        let gz_again = decode(&encode_gzip(&first, 1), DEFAULT_MAX_DECODED_SIZE).unwrap();
        assert_eq!(first, gz_again, "{}", path.display());
        seen += 1;
    }
    assert_eq!(
        seen,
        3,
        "expected the three Go profiles in {}",
        dir.display()
    );
}
