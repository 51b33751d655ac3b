//! The file sink's output is read by `go tool pprof` and is a real SVG flame graph.

use pyro_core::pprof::{ProfileBuilder, encode, encode_gzip};
use pyro_core::{Labels, Profile, Sink};
use pyro_file::FileSink;

fn profile(gzip: bool) -> Profile {
    let mut b = ProfileBuilder::cpu(100);
    let period = b.period();
    b.add_folded(&["app", "main", "hot"], &[7 * period]);
    b.add_folded(&["app", "main", "cold"], &[3 * period]);
    let p = b.build();
    let raw = if gzip { encode_gzip(&p, 1) } else { encode(&p) };
    Profile::new(
        Labels::from_iter([("__name__", "process_cpu"), ("service_name", "ebpf/ns/app")]),
        raw,
    )
}

#[test]
fn writes_pprof_that_go_reads_and_an_svg() {
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::new(dir.path().join("out")).unwrap();
    for gzip in [true, false] {
        let written = sink.write(&profile(gzip)).unwrap();
        let name = written
            .pprof
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("ebpf_ns_app.process_cpu."), "{name}");
        assert!(name.ends_with(".pb.gz"));
        let gz = std::fs::read(&written.pprof).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "pprof file is gzipped");

        let svg = std::fs::read_to_string(written.svg.expect("svg written")).unwrap();
        assert!(svg.contains("<svg"), "not an SVG");
        assert!(svg.contains("hot") && svg.contains("cold") && svg.contains("main"));

        if let Some(top) = pyro_testkit::go_pprof(&["-top"], &written.pprof) {
            // 7 of 10 samples in `hot`, 3 in `cold` (10ms period at 100 Hz).
            let hot = top
                .lines()
                .find(|l| l.ends_with(" hot"))
                .expect("hot in -top");
            let cold = top
                .lines()
                .find(|l| l.ends_with(" cold"))
                .expect("cold in -top");
            assert!(hot.contains("70ms") && hot.contains("70.00%"), "{top}");
            assert!(cold.contains("30ms") && cold.contains("30.00%"), "{top}");
        }
    }
}

#[test]
fn garbage_is_a_permanent_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::new(dir.path()).unwrap();
    let bad = Profile::new(Labels::from_iter([("__name__", "x")]), &b"not pprof"[..]);
    let err = futures_executor::block_on(sink.send(&bad)).unwrap_err();
    assert_eq!(err.kind, pyro_core::SinkErrorKind::InvalidInput);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn empty_profile_gets_no_svg() {
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::new(dir.path()).unwrap();
    let p = Profile::new(
        Labels::from_iter([("__name__", "process_cpu")]),
        encode_gzip(&ProfileBuilder::cpu(97).build(), 1),
    );
    let w = sink.write(&p).unwrap();
    assert!(w.svg.is_none());
    assert!(w.pprof.exists());
}

/// The profile's labels reach the file as sample labels that `go tool pprof -tags` lists; an
/// SDK's own sample label is kept as it was, and the stacks and values are unchanged.
#[test]
fn every_label_of_the_profile_is_in_the_file() {
    const CID: &str = "5b2c1f0e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";
    let mut b = ProfileBuilder::cpu(100);
    let period = b.period();
    let hot = b.frame("hot");
    let main = b.frame("main");
    // Leaf first, as pprof stores stacks; one sample carries an SDK label of its own.
    b.add_sample_with_labels(&[hot, main], &[7 * period], &[("thread", "worker")]);
    b.add_sample_with_labels(
        &[main],
        &[3 * period],
        &[("thread", "main"), ("region", "from-sdk")],
    );
    let profile = Profile::new(
        Labels::from_iter([
            ("__name__", "process_cpu"),
            ("service_name", "checkout"),
            ("region", "eu-west-1"),
            ("__container_id__", CID),
            ("empty", ""),
        ]),
        encode_gzip(&b.build(), 1),
    );
    let dir = tempfile::tempdir().unwrap();
    let written = FileSink::new(dir.path())
        .unwrap()
        .with_flame_graphs(false)
        .write(&profile)
        .unwrap();

    // Our own decoder: every sample has every label; the sample's own `region` wins.
    let raw = std::fs::read(&written.pprof).unwrap();
    let p = pyro_core::pprof::decode(&raw, pyro_core::pprof::DEFAULT_MAX_DECODED_SIZE).unwrap();
    pyro_core::pprof::check_valid(&p).unwrap();
    let labels: Vec<Vec<(String, String)>> = p
        .sample
        .iter()
        .map(|s| {
            let mut l: Vec<_> = s
                .label
                .iter()
                .map(|l| (p.string(l.key).to_owned(), p.string(l.str).to_owned()))
                .collect();
            l.sort();
            l
        })
        .collect();
    let expect = |thread: &str, region: &str| {
        let mut l: Vec<(String, String)> = [
            ("__container_id__", CID),
            ("__name__", "process_cpu"),
            ("region", region),
            ("service_name", "checkout"),
            ("thread", thread),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        l.sort();
        l
    };
    assert_eq!(
        labels,
        vec![expect("worker", "eu-west-1"), expect("main", "from-sdk")]
    );
    let values: Vec<i64> = p.sample.iter().map(|s| s.value[0]).collect();
    assert_eq!(values, vec![7 * period, 3 * period]);

    // The reference reader.
    if let Some(tags) = pyro_testkit::go_pprof(&["-tags"], &written.pprof) {
        for (key, value) in [
            ("service_name", "checkout"),
            ("region", "eu-west-1"),
            ("region", "from-sdk"),
            ("__container_id__", CID),
            ("thread", "worker"),
        ] {
            let section = tags
                .split("\n\n")
                .find(|s| s.trim_start().starts_with(&format!("{key}:")))
                .unwrap_or_else(|| panic!("no tag {key} in go tool pprof -tags:\n{tags}"));
            assert!(section.contains(value), "{key}={value} missing:\n{tags}");
        }
        assert!(!tags.contains("empty:"), "{tags}");
    }
}

/// A profile without labels is written byte for byte.
#[test]
fn unlabelled_profile_is_written_unchanged() {
    let raw = encode_gzip(&ProfileBuilder::cpu(97).build(), 6);
    let mut b = ProfileBuilder::cpu(97);
    b.add_folded(&["main"], &[1]);
    let with_sample = encode_gzip(&b.build(), 6);
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::new(dir.path()).unwrap();
    for raw in [raw, with_sample] {
        let w = sink
            .write(&Profile::new(Labels::new(), raw.clone()))
            .unwrap();
        assert_eq!(std::fs::read(&w.pprof).unwrap(), raw);
    }
}
