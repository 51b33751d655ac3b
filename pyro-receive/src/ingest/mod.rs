//! The legacy `/ingest` API: query parameters, format selection and the body parsers
//! ([`parse_ingest`]).
//!
//! Supported bodies: pprof (raw, gzip or plain; or `multipart/form-data` with a `profile` part
//! and an optional `sample_type_config` part) and the text formats `folded` (`a;b;c 12` per
//! line, the default) and `lines` (one stack per line, identical lines counted), which are
//! converted to pprof with [`ProfileBuilder`](pyro_core::pprof::ProfileBuilder). `trie`, `tree`, `jfr` and `speedscope` are
//! refused with 415, any other `format` with 400.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use pyro_core::labels::{LabelLimits, names};
use pyro_core::pprof::{self};
use pyro_core::{Labels, Profile};

use crate::error::RequestError;
use crate::limits::{Checked, IngestLimits, Refused};
use crate::push::pprof_error;

mod multipart;
mod params;
mod text;

pub use multipart::{MultipartParts, parse_multipart};
use params::*;
pub use params::{IngestParams, parse_params, parse_time};
use text::*;

/// One `/ingest` request as the parsers see it.
#[derive(Debug, Clone)]
pub struct IngestRequest<'a> {
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The body, already decompressed per `Content-Encoding`.
    pub body: Bytes,
}

/// Parses an `/ingest` request into the profile it carries (none for a text body without
/// stacks). Payloads are capped at `max_decoded_size` decompressed bytes.
///
/// ```
/// use pyro_receive::ingest::{IngestRequest, parse_ingest};
///
/// let req = IngestRequest {
///     query: "name=shop.cpu%7Benv%3Dprod%7D&sampleRate=100&spyName=rbspy",
///     content_type: None,
///     body: "main;work 3\nmain;idle 1\n".into(),
/// };
/// let profiles = parse_ingest(&req, 1 << 20).unwrap();
/// let p = &profiles[0];
/// assert_eq!(p.labels.get("__name__"), Some("process_cpu"));
/// assert_eq!(p.labels.get("service_name"), Some("shop"));
/// assert_eq!(p.labels.get("env"), Some("prod"));
/// let pprof = pyro_core::pprof::decode(&p.raw, 1 << 20).unwrap();
/// assert_eq!(pprof.sample.len(), 2);
/// ```
pub fn parse_ingest(
    req: &IngestRequest<'_>,
    max_decoded_size: usize,
) -> Result<Vec<Profile>, RequestError> {
    parse_ingest_with(
        req,
        max_decoded_size,
        &IngestLimits::default(),
        SystemTime::now(),
    )?
    .all_or_nothing()
}

/// [`parse_ingest`] with the host's [`IngestLimits`] (checked at `now`): a profile that breaks
/// one is [`Refused`] (at `body`) instead of returned. The ingestion window applies to the
/// profile's `time_nanos` after the 1970 fix (so to `from` for text formats and old clients).
pub fn parse_ingest_with(
    req: &IngestRequest<'_>,
    max_decoded_size: usize,
    limits: &IngestLimits,
    now: SystemTime,
) -> Result<Checked, RequestError> {
    let mut out = Checked::default();
    for p in parse_profiles(req, max_decoded_size)? {
        let decoded =
            pprof::decode(&p.raw, max_decoded_size).map_err(|e| pprof_error("pprof body", &e))?;
        match limits.check(&p.labels, &decoded, now) {
            Ok(()) => out.profiles.push(p),
            Err(error) => out.refused.push(Refused {
                at: "body".into(),
                error,
            }),
        }
    }
    Ok(out)
}

fn parse_profiles(
    req: &IngestRequest<'_>,
    max_decoded_size: usize,
) -> Result<Vec<Profile>, RequestError> {
    let params = parse_params(req.query, now_nanos())?;
    match select_format(params.format.as_deref(), req.content_type)? {
        IngestFormat::Folded | IngestFormat::Lines => parse_text(req, &params),
        IngestFormat::Pprof => {
            let profile = pprof_profile(&req.body, &params, &HashMap::new(), max_decoded_size)?;
            Ok(vec![profile])
        }
        IngestFormat::PprofMultipart => {
            let parts = parse_multipart(req, max_decoded_size)?;
            let profile = parts
                .profile
                .ok_or_else(|| RequestError::invalid("multipart body has no `profile` part"))?;
            let profile = pprof_profile(&profile, &params, &parts.display_names, max_decoded_size)?;
            Ok(vec![profile])
        }
    }
}

/// The body parser an `/ingest` request selects (Pyroscope's order, first match wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFormat {
    /// pprof bytes as the whole body.
    Pprof,
    /// `multipart/form-data` with a pprof `profile` part.
    PprofMultipart,
    /// `frame;frame;leaf count` lines.
    Folded,
    /// One stack per line.
    Lines,
}

const SUPPORTED: &str = "supported formats are pprof (raw or multipart), folded and lines";

/// Picks the parser for `format` and `Content-Type`.
pub fn select_format(
    format: Option<&str>,
    content_type: Option<&str>,
) -> Result<IngestFormat, RequestError> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let multipart = ct.contains("multipart/form-data");
    let unsupported = |f: &str| {
        RequestError::unsupported_media_type(format!(
            "format {f:?} is not supported by this receiver; {SUPPORTED}"
        ))
    };
    match format {
        Some(f @ ("trie" | "tree" | "jfr" | "speedscope")) => Err(unsupported(f)),
        _ if ct.starts_with("binary/octet-stream+trie") => Err(unsupported("trie")),
        _ if ct.starts_with("binary/octet-stream+tree") => Err(unsupported("tree")),
        Some("lines") => Ok(IngestFormat::Lines),
        Some("pprof") if multipart => Ok(IngestFormat::PprofMultipart),
        Some("pprof") => Ok(IngestFormat::Pprof),
        None if multipart => Ok(IngestFormat::PprofMultipart),
        None | Some("folded" | "groups") => Ok(IngestFormat::Folded),
        Some(other) => Err(RequestError::invalid(format!(
            "format: unknown format {other:?}; {SUPPORTED}"
        ))),
    }
}

/// `__name__` for a pprof from its sample types (and `display-name`s), Pyroscope's heuristic.
fn pprof_metric_name(p: &pprof::Profile, display_names: &HashMap<String, String>) -> &'static str {
    let types: Vec<&str> = p.sample_types().into_iter().map(|(t, _)| t).collect();
    if types.contains(&"wall") {
        return "wall";
    }
    let shown = |t: &str| display_names.get(t).map_or(t, String::as_str).to_owned();
    if types
        .iter()
        .any(|t| t.contains("cpu") || shown(t).contains("cpu"))
    {
        return "process_cpu";
    }
    for t in &types {
        for name in [(*t).to_owned(), shown(t)] {
            if ["alloc_", "inuse_", "space", "objects"]
                .iter()
                .any(|m| name.contains(m))
            {
                return "memory";
            }
            if name.starts_with("mutex_") {
                return "mutex";
            }
            if name.starts_with("block_") {
                return "block";
            }
            if name.contains("goroutine") {
                return "goroutine";
            }
        }
    }
    "unknown"
}

const NO_LENGTH_LIMITS: LabelLimits = LabelLimits {
    max_label_names_per_series: 0,
    max_label_name_length: 0,
    max_label_value_length: 0,
};

/// The series labels of an `/ingest` profile. `service` is the service name derived from the
/// application name; if the braces name a `service_name`, `service` goes to `app_name`.
fn ingest_labels(
    params: &IngestParams,
    metric: &str,
    service: &str,
) -> Result<Labels, RequestError> {
    let mut labels: Labels = params.name.labels.iter().cloned().collect();
    if labels.contains(names::SERVICE_NAME) {
        labels.set(names::APP_NAME, service);
    } else {
        labels.set(names::SERVICE_NAME, service);
    }
    labels.drop_reserved();
    labels.set(names::METRIC_NAME, metric);
    labels.set(names::DELTA, "false");
    labels.set(names::PYROSCOPE_SPY, params.spy_name.as_str());
    // The grammar here; counts and lengths are the ingest limits' (`parse_ingest_with`).
    labels
        .validate_with(&NO_LENGTH_LIMITS)
        .map_err(|e| RequestError::invalid(format!("invalid labels: {e}")))?;
    Ok(labels)
}

fn pprof_profile(
    raw: &Bytes,
    params: &IngestParams,
    display_names: &HashMap<String, String>,
    max_decoded_size: usize,
) -> Result<Profile, RequestError> {
    let mut decoded =
        pprof::decode(raw, max_decoded_size).map_err(|e| pprof_error("pprof body", &e))?;
    let metric = pprof_metric_name(&decoded, display_names);
    let labels = ingest_labels(params, metric, &params.name.app)?;
    // Old clients (pyroscope-rs < 1, py-spy, rbspy) wrote microseconds, landing in 1970;
    // Pyroscope replaces such times with `from`, and so does this receiver.
    const YEAR_NANOS: i64 = 365 * 86_400 * NANOS;
    let raw = if decoded.time_nanos < YEAR_NANOS {
        decoded.time_nanos = params.from_nanos;
        Bytes::from(pprof::encode(&decoded))
    } else {
        raw.clone()
    };
    Ok(Profile::new(labels, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_core::pprof::{ProfileBuilder, decode, encode_gzip, folded};

    fn ingest(
        query: &str,
        ct: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Vec<Profile>, RequestError> {
        // The fixtures are dated 2023: no ingestion window here.
        let limits = IngestLimits {
            reject_older_than: std::time::Duration::ZERO,
            ..IngestLimits::default()
        };
        parse_ingest_with(
            &IngestRequest {
                query,
                content_type: ct,
                body: body.into(),
            },
            1 << 20,
            &limits,
            SystemTime::now(),
        )?
        .all_or_nothing()
    }

    #[test]
    fn times() {
        let now = 1_700_000_000 * NANOS;
        assert_eq!(parse_time("1700000001", now), Some(1_700_000_001 * NANOS));
        assert_eq!(
            parse_time("1700000001000", now),
            Some(1_700_000_001 * NANOS)
        );
        assert_eq!(
            parse_time("1700000001000000", now),
            Some(1_700_000_001 * NANOS)
        );
        assert_eq!(
            parse_time("1700000001000000000", now),
            Some(1_700_000_001 * NANOS)
        );
        // 2023-11-14 = 19675 days after the epoch (`date -d 2023-11-14 +%s` / 86400).
        assert_eq!(parse_time("20231114", now), Some(19_675 * 86_400 * NANOS));
        assert_eq!(parse_time("20000229", now), Some(11_016 * 86_400 * NANOS));
        // Not a date: seconds.
        assert_eq!(parse_time("20231399", now), Some(20_231_399 * NANOS));
        assert_eq!(parse_time("now", now), Some(now));
        assert_eq!(parse_time("now-1h", now), Some(now - 3_600 * NANOS));
        assert_eq!(parse_time("now+30s", now), Some(now + 30 * NANOS));
        assert_eq!(parse_time("yesterday", now), None);
        assert_eq!(parse_time("99999999999999999999", now), None);
        assert_eq!(parse_time("now-1parsec", now), None);
    }

    #[test]
    fn folded_cpu_with_rate() {
        let p = ingest(
            "name=my.app.cpu%7Benv%3Dstaging%2C__session_id__%3Dx%7D&from=1700000000&until=1700000010&sampleRate=100&spyName=pyspy&format=folded",
            Some("text/plain"),
            "main;a;b 3\r\nmain;a;b 2\nmain;c 1\nno-count-line\n\n",
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        let l = &p[0].labels;
        assert_eq!(
            l.to_string(),
            Labels::from_iter([
                ("__delta__", "false"),
                ("__name__", "process_cpu"),
                ("env", "staging"),
                ("pyroscope_spy", "pyspy"),
                ("service_name", "my.app"),
            ])
            .to_string()
        );
        let pp = decode(&p[0].raw, 1 << 20).unwrap();
        assert_eq!(pp.sample_types(), [("cpu", "nanoseconds")]);
        assert_eq!(pp.period, 10_000_000);
        assert_eq!(pp.time_nanos, 1_700_000_000 * NANOS);
        assert_eq!(pp.duration_nanos, 10 * NANOS);
        let stacks = folded(&pp, 0);
        assert_eq!(stacks.len(), 2);
        assert_eq!(stacks[0].frames, ["main", "a", "b"]);
        assert_eq!(stacks[0].value, 5 * 10_000_000);
    }

    #[test]
    fn lines_and_types() {
        let p = ingest(
            "name=svc.alloc_space%7Bservice_name%3Dreal%7D&format=lines",
            None,
            "a;b\na;b\na\n",
        )
        .unwrap();
        let l = &p[0].labels;
        assert_eq!(l.get("__name__"), Some("memory"));
        assert_eq!(l.get("service_name"), Some("real"));
        assert_eq!(l.get("app_name"), Some("svc"));
        let pp = decode(&p[0].raw, 1 << 20).unwrap();
        assert_eq!(pp.sample_types(), [("alloc_space", "bytes")]);
        let stacks = folded(&pp, 0);
        assert_eq!((stacks[1].frames.len(), stacks[1].value), (2, 2));

        // No dot: cpu, whole app is the service; sampleRate=0 keeps sample counts.
        let p = ingest("name=plain&sampleRate=0", None, "x 4").unwrap();
        assert_eq!(p[0].labels.get("service_name"), Some("plain"));
        let pp = decode(&p[0].raw, 1 << 20).unwrap();
        assert_eq!(pp.sample_types(), [("samples", "count")]);
        assert_eq!(pp.sample[0].value, [4]);

        // Nothing to send.
        assert!(ingest("name=a.cpu", None, "").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_problem() {
        let e = ingest("name=my.service", None, "a 1").unwrap_err();
        assert!(
            e.message.contains("unknown profile type \"service\""),
            "{e}"
        );
        let e = ingest("from=1", None, "a 1").unwrap_err();
        assert!(e.message.contains("name"), "{e}");
        let e = ingest("name=a%20b", None, "a 1").unwrap_err();
        assert!(e.message.starts_with("name:"), "{e}");
        let e = ingest("name=a.cpu", None, "a b c x1").unwrap_err();
        assert!(e.message.contains("folded line 1"), "{e}");
        let e = ingest("name=a.cpu&format=jfr", None, "").unwrap_err();
        assert_eq!(e.status.as_u16(), 415);
        let e = ingest("name=a.cpu&format=nope", None, "").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.message.contains("unknown format \"nope\""), "{e}");
        let e = ingest("name=a.cpu", Some("binary/octet-stream+trie"), "").unwrap_err();
        assert_eq!(e.status.as_u16(), 415);
        let e = ingest("name=a.cpu", None, &b"\xff\xfe 1"[..]).unwrap_err();
        assert!(e.message.contains("UTF-8"), "{e}");
        let e = ingest("name=a.cpu&from=tomorrow", None, "a 1").unwrap_err();
        assert!(e.message.starts_with("from:"), "{e}");
        let e = ingest("name=a.cpu%7Bbad.-x%3D1%7D", None, "a 1").unwrap_err();
        assert!(e.message.contains("bad.-x"), "{e}");
        let e = ingest("name=a.cpu%7Bx%3D%7D", None, "a 1");
        // An empty value means "no such label".
        assert!(e.unwrap()[0].labels.get("x").is_none());
    }

    /// A CPU profile written by the Go runtime (copied from the shared test data).
    fn go_cpu_pprof() -> Vec<u8> {
        include_bytes!("../../testdata/go-cpu.pb.gz").to_vec()
    }

    #[test]
    fn pprof_raw_and_time_fix() {
        let raw = go_cpu_pprof();
        let p = ingest(
            "name=goapp%7Bregion%3Deu%7D&format=pprof&spyName=gospy",
            None,
            raw.clone(),
        )
        .unwrap();
        let l = &p[0].labels;
        assert_eq!(l.get("__name__"), Some("process_cpu"));
        assert_eq!(l.get("service_name"), Some("goapp"));
        assert_eq!(l.get("region"), Some("eu"));
        assert_eq!(l.get("pyroscope_spy"), Some("gospy"));
        assert_eq!(
            p[0].raw, raw,
            "a profile with a valid time is forwarded untouched"
        );

        let mut b = ProfileBuilder::new(&[("alloc_objects", "count")]);
        b.add_folded(&["x"], &[1]);
        b.set_time(1_700_000_000_000_000, 0); // microseconds: 1970
        let p = ingest(
            "name=a&format=pprof&from=1700000000",
            None,
            pprof::encode(&b.build()),
        )
        .unwrap();
        assert_eq!(p[0].labels.get("__name__"), Some("memory"));
        assert_eq!(
            decode(&p[0].raw, 1 << 20).unwrap().time_nanos,
            1_700_000_000 * NANOS
        );

        let e = ingest("name=a&format=pprof", None, &b"not pprof \xff"[..]).unwrap_err();
        assert!(e.message.starts_with("pprof body"), "{e}");
    }

    fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
        let boundary = "XyZboundary42";
        let mut body = Vec::new();
        for (name, data) in parts {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }

    #[test]
    fn pprof_multipart() {
        let mut b = ProfileBuilder::new(&[("contentions", "count"), ("delay", "nanoseconds")]);
        b.add_folded(&["x"], &[1, 100]);
        b.set_time(1_700_000_000 * NANOS, 0);
        let raw = encode_gzip(&b.build(), 1);
        let config = br#"{"contentions":{"display-name":"mutex_count","units":"lock_samples"},"delay":{"display-name":"mutex_duration"}}"#;
        let (ct, body) = multipart(&[("profile", &raw), ("sample_type_config", config)]);
        let p = ingest("name=goapp", Some(&ct), body.clone()).unwrap();
        assert_eq!(p[0].labels.get("__name__"), Some("mutex"));
        assert_eq!(p[0].raw, raw);

        // Truncated: the closing boundary is missing.
        let e = ingest("name=goapp", Some(&ct), body[..body.len() / 2].to_vec()).unwrap_err();
        assert!(e.message.starts_with("multipart:"), "{e}");
        assert_eq!(e.status.as_u16(), 400);

        let (ct, body) = multipart(&[("sample_type_config", config)]);
        let e = ingest("name=goapp", Some(&ct), body).unwrap_err();
        assert!(e.message.contains("no `profile` part"), "{e}");
        let (ct, body) = multipart(&[("profile", &raw), ("prev_profile", &raw)]);
        let e = ingest("name=goapp", Some(&ct), body).unwrap_err();
        assert!(e.message.contains("prev_profile"), "{e}");
        let (ct, body) = multipart(&[("profile", &raw), ("sample_type_config", b"[1")]);
        let e = ingest("name=goapp", Some(&ct), body).unwrap_err();
        assert!(e.message.contains("sample_type_config"), "{e}");
        let e = ingest("name=goapp", Some("multipart/form-data"), "x").unwrap_err();
        assert!(e.message.contains("Content-Type"), "{e}");
    }
}
