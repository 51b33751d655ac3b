//! The `/ingest` parsers (query string, folded/lines text, raw pprof, multipart) never panic,
//! and what they accept is valid: labels pass validation and the pprof decodes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pyro_receive::ingest::{IngestRequest, parse_ingest};

const CAP: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let fixed_queries = [
        "name=app.cpu%7Benv%3Dprod%7D&sampleRate=100&from=1700000000&until=1700000010",
        "name=app.alloc_space&format=lines",
        "name=app%7Bservice_name%3Dx%7D&format=pprof&from=1700000000",
        "name=app",
    ];
    // Low bits: a fixed query, or the fuzzer's own (length-prefixed) query string.
    let (query, body): (String, &[u8]) = match selector & 7 {
        q @ 0..=3 => (fixed_queries[q as usize].to_owned(), rest),
        _ => {
            let Some((&len, rest)) = rest.split_first() else {
                return;
            };
            let len = usize::from(len).min(rest.len());
            (String::from_utf8_lossy(&rest[..len]).into_owned(), &rest[len..])
        }
    };
    let content_type = match (selector >> 3) & 3 {
        0 => None,
        1 => Some("multipart/form-data; boundary=B"),
        2 => Some("text/plain"),
        _ => Some("binary/octet-stream+trie"),
    };
    let req = IngestRequest {
        query: &query,
        content_type,
        body: Bytes::copy_from_slice(body),
    };
    match parse_ingest(&req, CAP) {
        Ok(profiles) => {
            for p in profiles {
                p.labels.validate().expect("accepted labels are valid");
                pyro_core::pprof::decode(&p.raw, CAP).expect("accepted payload decodes");
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{e}"),
    }
});
