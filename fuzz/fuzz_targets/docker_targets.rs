//! Docker discovery never panics on any Engine API answer: the input is a `GET /containers/json`
//! answer, a NUL byte, and a `GET /networks` answer (JSON never holds a raw NUL), decoded with
//! bollard's models as the discoverer decodes them and turned into targets. Every target it
//! makes has an address and the container's id and name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_discovery::docker::fuzzing::targets_from_json;

fuzz_target!(|data: &[u8]| {
    let (containers, networks) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"[]"[..]),
    };
    for first in [true, false] {
        let Ok(targets) = targets_from_json(containers, networks, first) else {
            return;
        };
        for t in &targets {
            let l = t.labels();
            assert!(l.get("__address__").is_some(), "{l:?}");
            assert!(l.get("__meta_docker_container_name").is_some(), "{l:?}");
        }
    }
});
