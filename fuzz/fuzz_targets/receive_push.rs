//! The Push body parsers (protobuf and protojson, with or without gzip) never panic, and what
//! they accept is valid: labels pass validation and every payload decodes within the cap.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pyro_receive::decode_content_encoding;
use pyro_receive::push::{PushEncoding, parse_push};

const CAP: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        PushEncoding::Proto
    } else {
        PushEncoding::Json
    };
    let content_encoding = match (selector >> 1) & 3 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("identity"),
        _ => Some("br"),
    };
    let body = match decode_content_encoding(content_encoding, Bytes::copy_from_slice(body), CAP) {
        Ok(b) => b,
        Err(e) => {
            assert!(e.status.is_client_error() || e.status.as_u16() == 501, "{e}");
            return;
        }
    };
    match parse_push(body, encoding, CAP) {
        Ok(profiles) => {
            assert!(!profiles.is_empty());
            for p in profiles {
                p.labels.validate().expect("accepted labels are valid");
                pyro_core::pprof::decode(&p.raw, CAP).expect("accepted payload decodes");
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{e}"),
    }
});
