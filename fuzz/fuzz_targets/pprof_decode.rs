//! The pprof decoder must return an error, never panic or allocate without bound, on any input
//! (plain or gzip), and whatever it accepts must survive a re-encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_core::pprof::{check_valid, decode, encode, folded};

/// Small enough that a gzip bomb hits the cap quickly.
const CAP: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = decode(data, CAP) {
        check_valid(&profile).expect("decode only returns valid profiles");
        let again = decode(&encode(&profile), usize::MAX).expect("re-encoded profile decodes");
        assert_eq!(profile, again);
        for i in 0..profile.sample_type.len() {
            let _ = folded(&profile, i);
        }
    }
});
