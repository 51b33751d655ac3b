//! The Pyroscope push API messages (`push.v1.PushRequest` and friends), shared by the writer
//! (`pyro-write`, which sends them) and the HTTP receiver (`pyro-receive`, which accepts them).
//!
//! Hand-written with prost derives from the documented field numbers, so that no AGPL `.proto`
//! file is vendored:
//!
//! | message | fields |
//! |---|---|
//! | `push.v1.PushRequest` | 1 `series: repeated RawProfileSeries` |
//! | `push.v1.RawProfileSeries` | 1 `labels: repeated types.v1.LabelPair`, 2 `samples: repeated RawSample` (3 `annotations` is dropped by the server and skipped here like any unknown field) |
//! | `push.v1.RawSample` | 1 `raw_profile: bytes`, 2 `ID: string` |
//! | `types.v1.LabelPair` | 1 `name: string`, 2 `value: string` |

use bytes::Bytes;

/// `push.v1.PushRequest`: the body of `POST /push.v1.PusherService/Push`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// One entry per label set.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`: a label set and the pprof blobs that belong to it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    /// The series labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    /// One or more pprof payloads.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `push.v1.RawSample`: one pprof payload, gzip-compressed or plain.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// Serialized `perftools.profiles.Profile`, gzip or plain (the server sniffs `1f 8b`).
    #[prost(bytes = "bytes", tag = "1")]
    pub raw_profile: Bytes,
    /// Optional profile id; the server logs it and assigns its own.
    #[prost(string, tag = "2")]
    pub id: String,
}

impl PushRequest {
    /// A request with one series: `profile`'s labels as they are (label policy is the
    /// sender's) and its payload as the one sample.
    ///
    /// ```
    /// use pyro_core::push::PushRequest;
    /// use pyro_core::{Labels, Profile};
    ///
    /// let profile = Profile::new(Labels::from_iter([("__name__", "process_cpu")]), &b"pprof"[..]);
    /// let req = PushRequest::from_profile(&profile);
    /// assert_eq!(req.series[0].labels[0].name, "__name__");
    /// assert_eq!(&req.series[0].samples[0].raw_profile[..], b"pprof");
    /// ```
    pub fn from_profile(profile: &crate::Profile) -> Self {
        PushRequest {
            series: vec![RawProfileSeries {
                labels: profile
                    .labels
                    .iter()
                    .map(|l| LabelPair {
                        name: l.name().to_owned(),
                        value: l.value().to_owned(),
                    })
                    .collect(),
                samples: vec![RawSample {
                    raw_profile: profile.raw.clone(),
                    id: profile.id.clone().unwrap_or_default(),
                }],
            }],
        }
    }
}

/// `push.v1.PushResponse`: empty.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct PushResponse {}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn wire_bytes_match_the_documented_tags() {
        let req = PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![LabelPair {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![RawSample {
                    raw_profile: Bytes::from_static(b"xy"),
                    id: "i".into(),
                }],
            }],
        };
        let bytes = req.encode_to_vec();
        // series(1) { labels(1) { name(1) "a", value(2) "b" }, samples(2) { raw(1) "xy", ID(2) "i" } }
        let expected = [
            0x0A, 17, // series, len 17
            0x0A, 6, 0x0A, 1, b'a', 0x12, 1, b'b', // labels
            0x12, 7, 0x0A, 2, b'x', b'y', 0x12, 1, b'i', // samples
        ];
        assert_eq!(bytes, expected);
        assert_eq!(PushRequest::decode(&bytes[..]).unwrap(), req);
    }
}
