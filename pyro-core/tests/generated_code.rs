//! The checked-in prost code must be what `proto/profile.proto` generates today.
//! Run with `PYRO_UPDATE_GENERATED=1` to rewrite it after changing the proto.

use std::path::Path;

#[test]
fn generated_code_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile([root.join("proto/profile.proto")], [root.join("proto")])
        .expect("profile.proto compiles");
    let out = tempfile::tempdir().unwrap();
    prost_build::Config::new()
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("prost-build generates code");
    let generated = std::fs::read_to_string(out.path().join("perftools.profiles.rs")).unwrap();
    let committed_path = root.join("src/pprof/gen/perftools.profiles.rs");
    if std::env::var_os("PYRO_UPDATE_GENERATED").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "src/pprof/gen/perftools.profiles.rs is stale; rerun this test with PYRO_UPDATE_GENERATED=1"
    );
}
