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
