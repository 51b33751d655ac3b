//! `push.v1.PusherService/Push`: the request messages, their protojson form, and
//! [`parse_push`], which turns a request body into validated [`Profile`]s.
//!
//! The four messages live in [`pyro_core::push`] (shared with the writer) and are re-exported
//! here.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use prost::Message as _;
use pyro_core::pprof::{self, PprofError};
use pyro_core::{Labels, Profile};
use serde::Deserialize;

use std::time::SystemTime;

use crate::error::RequestError;
use crate::labels;
use crate::limits::{Checked, IngestLimits, LimitError, Refused};

pub use pyro_core::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};

/// How a Push body is serialised (from its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEncoding {
    /// `application/proto`: binary protobuf.
    Proto,
    /// `application/json`: canonical protobuf JSON.
    Json,
}

impl PushEncoding {
    /// The encoding for a `Content-Type` header value (media type compared case-insensitively,
    /// parameters other than `charset=utf-8` on JSON refused), or `None` if unsupported.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mut parts = value.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params: Vec<String> = parts
            .map(|p| p.trim().to_ascii_lowercase().replace(' ', ""))
            .filter(|p| !p.is_empty())
            .collect();
        match media.as_str() {
            "application/proto" | "application/protobuf" | "application/x-protobuf"
                if params.is_empty() =>
            {
                Some(Self::Proto)
            }
            "application/json"
                if params
                    .iter()
                    .all(|p| p == "charset=utf-8" || p == "charset=\"utf-8\"") =>
            {
                Some(Self::Json)
            }
            _ => None,
        }
    }

    /// The `Content-Type` of a response in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/proto",
            Self::Json => "application/json",
        }
    }

    /// The body of a successful response (an empty `PushResponse`).
    pub fn empty_response(self) -> &'static [u8] {
        match self {
            Self::Proto => b"",
            Self::Json => b"{}",
        }
    }
}

#[derive(Deserialize)]
struct JsonPushRequest {
    #[serde(default)]
    series: Option<Vec<JsonSeries>>,
}

#[derive(Deserialize)]
struct JsonSeries {
    #[serde(default)]
    labels: Option<Vec<JsonLabel>>,
    #[serde(default)]
    samples: Option<Vec<JsonSample>>,
}

#[derive(Deserialize)]
struct JsonLabel {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct JsonSample {
    #[serde(default, rename = "rawProfile", alias = "raw_profile")]
    raw_profile: Option<String>,
    #[serde(default, rename = "ID", alias = "id")]
    id: Option<String>,
}

const INDIFFERENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);

/// Decodes protojson `bytes`: the standard or URL-safe alphabet, padded or not.
fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if s.contains(['-', '_']) {
        URL_SAFE.decode(s)
    } else {
        STANDARD.decode(s)
    }
}

/// Decodes a `PushRequest` from a (decompressed) body.
pub fn decode_push_request(
    body: Bytes,
    encoding: PushEncoding,
) -> Result<PushRequest, RequestError> {
    match encoding {
        PushEncoding::Proto => PushRequest::decode(body)
            .map_err(|e| RequestError::invalid(format!("unmarshal message: {e}"))),
        PushEncoding::Json => {
            let json: JsonPushRequest = serde_json::from_slice(&body)
                .map_err(|e| RequestError::invalid(format!("unmarshal message: {e}")))?;
            let mut series = Vec::new();
            for (i, s) in json.series.unwrap_or_default().into_iter().enumerate() {
                let labels = s
                    .labels
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| LabelPair {
                        name: l.name.unwrap_or_default(),
                        value: l.value.unwrap_or_default(),
                    })
                    .collect();
                let mut samples = Vec::new();
                for (j, sample) in s.samples.unwrap_or_default().into_iter().enumerate() {
                    let raw = decode_base64(sample.raw_profile.as_deref().unwrap_or(""))
                        .map_err(|e| {
                            RequestError::invalid(format!(
                                "unmarshal message: series[{i}].samples[{j}].rawProfile is not base64: {e}"
                            ))
                        })?;
                    samples.push(RawSample {
                        raw_profile: raw.into(),
                        id: sample.id.unwrap_or_default(),
                    });
                }
                series.push(RawProfileSeries { labels, samples });
            }
            Ok(PushRequest { series })
        }
    }
}

/// Maps a pprof decoding failure of one payload to the client's error.
pub(crate) fn pprof_error(what: &str, e: &PprofError) -> RequestError {
    match e {
        PprofError::TooLarge { .. } => RequestError::too_large(format!("{what}: {e}")),
        _ => RequestError::invalid(format!("{what}: {e}")),
    }
}

/// Parses a Push body (already decompressed per `Content-Encoding`) into profiles: decodes the
/// `PushRequest`, normalises and validates each series' labels (see [`crate::labels`]), and
/// checks that every `raw_profile` is a pprof that decodes within `max_decoded_size` bytes and
/// passes Pyroscope's default ingest limits ([`IngestLimits::default`], now). The profiles
/// carry the payloads as sent (gzip or plain) and the sample `ID` if non-empty.
///
/// All or nothing: a bad series refuses the request without any of it being returned.
/// [`parse_push_with`] keeps the good profiles (what the server does).
///
/// ```
/// use prost::Message;
/// use pyro_core::pprof::{ProfileBuilder, encode_gzip};
/// use pyro_receive::push::{LabelPair, PushEncoding, PushRequest, RawProfileSeries, RawSample, parse_push};
///
/// let mut b = ProfileBuilder::cpu(100);
/// b.add_folded(&["main", "work"], &[10_000_000]);
/// let req = PushRequest {
///     series: vec![RawProfileSeries {
///         labels: vec![
///             LabelPair { name: "__name__".into(), value: "process_cpu".into() },
///             LabelPair { name: "service_name".into(), value: "api".into() },
///         ],
///         samples: vec![RawSample { raw_profile: encode_gzip(&b.build(), 1).into(), id: String::new() }],
///     }],
/// };
/// let profiles = parse_push(req.encode_to_vec().into(), PushEncoding::Proto, 1 << 20).unwrap();
/// assert_eq!(profiles[0].service_name(), Some("api"));
/// ```
pub fn parse_push(
    body: Bytes,
    encoding: PushEncoding,
    max_decoded_size: usize,
) -> Result<Vec<Profile>, RequestError> {
    parse_push_with(
        body,
        encoding,
        max_decoded_size,
        &IngestLimits::default(),
        SystemTime::now(),
    )?
    .all_or_nothing()
}

/// [`parse_push`] with the host's [`IngestLimits`], keeping the profiles that pass: a series
/// whose labels break a rule, or a sample that breaks a limit (checked at `now`), is
/// [`Refused`] alone, as Pyroscope's distributor discards it alone (see
/// [`crate::limits`]). A body that does not decode, or a `raw_profile` that is not a pprof,
/// still refuses the whole request.
pub fn parse_push_with(
    body: Bytes,
    encoding: PushEncoding,
    max_decoded_size: usize,
    limits: &IngestLimits,
    now: SystemTime,
) -> Result<Checked, RequestError> {
    let req = decode_push_request(body, encoding)?;
    let label_limits = limits.labels();
    let mut out = Checked::default();
    let mut any = false;
    for (i, series) in req.series.into_iter().enumerate() {
        if series.samples.is_empty() {
            continue;
        }
        any = true;
        let pairs: Vec<(String, String)> = series
            .labels
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect();
        let labels = match labels::push_series_labels_with(pairs.iter().cloned(), &label_limits) {
            Ok(l) => l,
            Err(source) => {
                out.refused.push(Refused {
                    at: format!("series[{i}]"),
                    error: LimitError::Labels {
                        labels: Labels::from_iter(pairs).to_short_string(),
                        source,
                    },
                });
                continue;
            }
        };
        for (j, sample) in series.samples.into_iter().enumerate() {
            let at = || format!("series[{i}].samples[{j}]");
            let decoded = match pprof::decode(&sample.raw_profile, max_decoded_size) {
                Ok(p) => p,
                // Decoding stopped at `max_decoded_size`, above `max_profile_size_bytes`: the
                // profile breaks that limit, whatever its real size.
                Err(e @ PprofError::TooLarge { limit }) => {
                    match limits.check_size(&labels, limit.saturating_add(1)) {
                        Err(error) => {
                            out.refused.push(Refused { at: at(), error });
                            continue;
                        }
                        Ok(()) => return Err(pprof_error(&format!("{}.raw_profile", at()), &e)),
                    }
                }
                Err(e) => return Err(pprof_error(&format!("{}.raw_profile", at()), &e)),
            };
            if let Err(error) = limits.check(&labels, &decoded, now) {
                out.refused.push(Refused { at: at(), error });
                continue;
            }
            let mut p = Profile::new(labels.clone(), sample.raw_profile);
            if !sample.id.is_empty() {
                p = p.with_id(sample.id);
            }
            out.profiles.push(p);
        }
    }
    if !any {
        return Err(RequestError::invalid("no profiles received"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_core::pprof::{ProfileBuilder, encode, encode_gzip};

    fn pprof_bytes() -> Vec<u8> {
        let mut b = ProfileBuilder::cpu(100);
        b.add_folded(&["main", "work"], &[10_000_000]);
        encode(&b.build())
    }

    fn request(labels: &[(&str, &str)], raw: Vec<u8>) -> PushRequest {
        let profile = Profile::new(Labels::from_iter(labels.iter().copied()), raw);
        PushRequest::from_profile(&profile.with_id("id-1"))
    }

    #[test]
    fn proto_and_json_agree() {
        let raw = pprof_bytes();
        let req = request(
            &[("__name__", "process_cpu"), ("service_name", "a")],
            raw.clone(),
        );
        let from_proto =
            parse_push(req.encode_to_vec().into(), PushEncoding::Proto, 1 << 20).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let json = format!(
            r#"{{"series":[{{"labels":[{{"name":"__name__","value":"process_cpu"}},{{"name":"service_name","value":"a"}}],"samples":[{{"ID":"id-1","rawProfile":"{b64}","unknown":1}}]}}],"x":null}}"#
        );
        let from_json = parse_push(json.into(), PushEncoding::Json, 1 << 20).unwrap();
        assert_eq!(from_proto, from_json);
        assert_eq!(from_proto[0].id.as_deref(), Some("id-1"));
        assert_eq!(from_proto[0].raw, raw);
        // raw_profile spelling, URL-safe alphabet without padding.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        let json = format!(
            r#"{{"series":[{{"labels":[{{"name":"__name__","value":"process_cpu"}},{{"name":"service_name","value":"a"}}],"samples":[{{"raw_profile":"{b64}"}}]}}]}}"#
        );
        let p = parse_push(json.into(), PushEncoding::Json, 1 << 20).unwrap();
        assert_eq!(p[0].raw, raw);
    }

    #[test]
    fn bad_input_names_the_problem() {
        let e = parse_push(
            Bytes::from_static(b"\xff\xff\xff"),
            PushEncoding::Proto,
            1 << 20,
        )
        .unwrap_err();
        assert!(e.message.starts_with("unmarshal message"), "{e}");
        let e = parse_push(Bytes::from_static(b"{"), PushEncoding::Json, 1 << 20).unwrap_err();
        assert!(e.message.starts_with("unmarshal message"), "{e}");
        let e = parse_push(Bytes::new(), PushEncoding::Proto, 1 << 20).unwrap_err();
        assert_eq!(e.message, "no profiles received");

        let req = request(&[("__name__", "process_cpu")], b"garbage\xff".to_vec());
        let e = parse_push(req.encode_to_vec().into(), PushEncoding::Proto, 1 << 20).unwrap_err();
        assert!(
            e.message.contains("series[0].samples[0].raw_profile"),
            "{e}"
        );
        assert_eq!(e.status.as_u16(), 400);

        let req = request(
            &[("__name__", "process_cpu"), ("bad-name", "x")],
            pprof_bytes(),
        );
        let e = parse_push(req.encode_to_vec().into(), PushEncoding::Proto, 1 << 20).unwrap_err();
        assert!(e.message.contains("bad-name"), "{e}");

        let gz = encode_gzip(
            &pyro_core::pprof::decode(&pprof_bytes(), 1 << 20).unwrap(),
            1,
        );
        let req = request(&[("__name__", "process_cpu")], gz);
        let e = parse_push(req.encode_to_vec().into(), PushEncoding::Proto, 10).unwrap_err();
        assert_eq!(e.status.as_u16(), 413, "{e}");
    }

    #[test]
    fn content_types() {
        use PushEncoding::*;
        assert_eq!(
            PushEncoding::from_content_type("application/proto"),
            Some(Proto)
        );
        assert_eq!(
            PushEncoding::from_content_type("Application/JSON"),
            Some(Json)
        );
        assert_eq!(
            PushEncoding::from_content_type("application/json; charset=UTF-8"),
            Some(Json)
        );
        assert_eq!(
            PushEncoding::from_content_type("application/json; charset=latin1"),
            None
        );
        assert_eq!(PushEncoding::from_content_type("application/grpc"), None);
        assert_eq!(PushEncoding::from_content_type("text/plain"), None);
    }
}
