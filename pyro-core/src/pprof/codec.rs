use std::io::{Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use super::Profile;

/// Default cap on a decoded profile's size (decompressed bytes): 16 MiB, four times
/// Pyroscope's own 4 MiB limit per profile.
pub const DEFAULT_MAX_DECODED_SIZE: usize = 16 << 20;

/// A pprof payload could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PprofError {
    /// The input is empty.
    #[error("empty pprof payload")]
    Empty,
    /// The gzip stream is corrupt or truncated.
    #[error("corrupt or truncated gzip stream: {0}")]
    Gzip(#[source] std::io::Error),
    /// Decompressing would exceed the cap.
    #[error("decompressed payload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The bytes are not a pprof protobuf message.
    #[error("not a pprof profile: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The message decodes but breaks a structural rule of the format.
    #[error("invalid pprof profile: {0}")]
    Invalid(String),
}

/// Whether `data` starts with the gzip magic `1f 8b`.
pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

/// Decompresses gzip `data` (all members), failing with [`PprofError::TooLarge`] as soon as the
/// output would exceed `limit` bytes — memory use stays bounded by `limit` whatever the input.
pub fn gunzip_capped(data: &[u8], limit: usize) -> Result<Vec<u8>, PprofError> {
    let mut out = Vec::with_capacity((data.len() * 4).min(limit));
    let mut reader = flate2::read::MultiGzDecoder::new(data).take(limit as u64 + 1);
    reader.read_to_end(&mut out).map_err(PprofError::Gzip)?;
    if out.len() > limit {
        return Err(PprofError::TooLarge { limit });
    }
    Ok(out)
}

/// Decodes a pprof profile from plain or gzip-compressed bytes (sniffed), with the decoded size
/// capped at `max_decoded_size` bytes. The result is checked with [`check_valid`].
pub fn decode(data: &[u8], max_decoded_size: usize) -> Result<Profile, PprofError> {
    if data.is_empty() {
        return Err(PprofError::Empty);
    }
    let profile = if is_gzip(data) {
        let plain = gunzip_capped(data, max_decoded_size)?;
        Profile::decode(plain.as_slice())?
    } else {
        if data.len() > max_decoded_size {
            return Err(PprofError::TooLarge {
                limit: max_decoded_size,
            });
        }
        Profile::decode(data)?
    };
    check_valid(&profile)?;
    Ok(profile)
}

/// Encodes `profile` as plain protobuf bytes.
pub fn encode(profile: &Profile) -> Vec<u8> {
    profile.encode_to_vec()
}

/// Encodes `profile` and gzip-compresses it at `level` (0–9; Alloy uses 1, "best speed").
pub fn encode_gzip(profile: &Profile, level: u32) -> Vec<u8> {
    gzip(&profile.encode_to_vec(), level)
}

/// Gzip-compresses `data` at `level` (0–9, 1 is "best speed" as Alloy and Pyroscope's clients
/// use): the one gzip encoder of every pyro crate (pprof payloads, push bodies, files).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        Compression::new(level.min(9)),
    );
    // Writing to a Vec cannot fail.
    enc.write_all(data).expect("write to Vec");
    enc.finish().expect("finish to Vec")
}

/// Checks the structural rules of pprof that `go tool pprof` (`CheckValid`) and Pyroscope's
/// `ValidateProfile` enforce: `string_table[0] == ""`, every string index in range, non-zero and
/// unique mapping/location/function ids, every sample referencing existing locations and having
/// one value per sample type, every line referencing an existing function.
pub fn check_valid(p: &Profile) -> Result<(), PprofError> {
    let invalid = |msg: String| Err(PprofError::Invalid(msg));
    // As in Go's decoder and Pyroscope: the table must exist and start with "".
    if p.string_table.first().is_none_or(|s| !s.is_empty()) {
        return invalid("string_table[0] must be \"\"".into());
    }
    let n = p.string_table.len() as i64;
    let str_ok = |i: i64| (0..n.max(1)).contains(&i);
    if !p.sample.is_empty() && p.sample_type.is_empty() {
        return invalid("samples present but no sample type".into());
    }
    for vt in p.sample_type.iter().chain(p.period_type.iter()) {
        if !str_ok(vt.r#type) || !str_ok(vt.unit) {
            return invalid("sample type string index out of range".into());
        }
    }
    for i in [
        p.drop_frames,
        p.keep_frames,
        p.default_sample_type,
        p.doc_url,
    ]
    .into_iter()
    .chain(p.comment.iter().copied())
    {
        if !str_ok(i) {
            return invalid(format!("string index {i} out of range"));
        }
    }
    for m in &p.mapping {
        if !str_ok(m.filename) || !str_ok(m.build_id) {
            return invalid(format!("mapping {}: string index out of range", m.id));
        }
    }
    IdSet::new(p.mapping.iter().map(|m| m.id), "mapping")?;
    for f in &p.function {
        if !str_ok(f.name) || !str_ok(f.system_name) || !str_ok(f.filename) {
            return invalid(format!("function {}: string index out of range", f.id));
        }
    }
    let functions = IdSet::new(p.function.iter().map(|f| f.id), "function")?;
    let locations = IdSet::new(p.location.iter().map(|l| l.id), "location")?;
    for l in &p.location {
        if let Some(line) = l.line.iter().find(|ln| !functions.contains(ln.function_id)) {
            return invalid(format!(
                "location {} has a line with unknown function {}",
                l.id, line.function_id
            ));
        }
    }
    for (i, s) in p.sample.iter().enumerate() {
        if s.value.len() != p.sample_type.len() {
            return invalid(format!(
                "sample {i} has {} values for {} sample types",
                s.value.len(),
                p.sample_type.len()
            ));
        }
        if let Some(id) = s.location_id.iter().find(|id| !locations.contains(**id)) {
            return invalid(format!("sample {i} refers to unknown location {id}"));
        }
        for l in &s.label {
            if !str_ok(l.key) || !str_ok(l.str) || !str_ok(l.num_unit) {
                return invalid(format!("sample {i}: label string index out of range"));
            }
        }
    }
    Ok(())
}

/// The ids of one table, checked non-zero and unique. Builders (ours, Go's) number ids
/// `1..=n` in order, which makes membership a range check; other numbering falls back to a
/// sorted list.
enum IdSet {
    Dense(u64),
    Sorted(Vec<u64>),
}

impl IdSet {
    fn new(
        ids: impl ExactSizeIterator<Item = u64> + Clone,
        table: &str,
    ) -> Result<Self, PprofError> {
        let n = ids.len() as u64;
        if ids.clone().zip(1..).all(|(id, want)| id == want) {
            return Ok(Self::Dense(n));
        }
        let mut sorted: Vec<u64> = ids.collect();
        sorted.sort_unstable();
        if sorted.first() == Some(&0) {
            return Err(PprofError::Invalid(format!("{table} id 0 is reserved")));
        }
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(PprofError::Invalid(format!(
                "{table} id {} is repeated",
                w[0]
            )));
        }
        Ok(Self::Sorted(sorted))
    }

    fn contains(&self, id: u64) -> bool {
        match self {
            Self::Dense(n) => (1..=*n).contains(&id),
            Self::Sorted(ids) => ids.binary_search(&id).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::ProfileBuilder;

    fn small() -> Profile {
        let mut b = ProfileBuilder::new(&[("samples", "count")]);
        b.add_folded(&["main", "work"], &[3]);
        b.build()
    }

    #[test]
    fn round_trip_plain_and_gzip() {
        let p = small();
        assert_eq!(decode(&encode(&p), 1 << 20).unwrap(), p);
        let gz = encode_gzip(&p, 1);
        assert!(is_gzip(&gz));
        assert_eq!(decode(&gz, 1 << 20).unwrap(), p);
    }

    #[test]
    fn garbage_truncated_and_bombs_are_errors() {
        assert!(matches!(decode(&[], 100), Err(PprofError::Empty)));
        // Decodes as protobuf (one unknown field) but has no string table: not a profile.
        assert!(matches!(
            decode(&[0xe0, 0x22, 0x15], 100),
            Err(PprofError::Invalid(_))
        ));
        assert!(matches!(
            decode(b"\xff\xff\xff\xff garbage", 100),
            Err(PprofError::Decode(_))
        ));
        let gz = encode_gzip(&small(), 6);
        assert!(matches!(
            decode(&gz[..gz.len() / 2], 1 << 20),
            Err(PprofError::Gzip(_))
        ));
        // 64 MiB of zeros compress to about 64 KiB; with a 1 MiB cap decoding stops early.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 256 << 10, "bomb is {} bytes", bomb.len());
        assert!(matches!(
            decode(&bomb, 1 << 20),
            Err(PprofError::TooLarge { limit }) if limit == 1 << 20
        ));
        // A plain payload over the cap is refused too.
        assert!(matches!(
            decode(&encode(&small()), 4),
            Err(PprofError::TooLarge { .. })
        ));
    }

    #[test]
    fn structural_rules() {
        let mut p = small();
        p.string_table[0] = "x".into();
        assert!(check_valid(&p).is_err());
        let mut p = small();
        p.sample[0].value.push(1);
        assert!(check_valid(&p).unwrap_err().to_string().contains("values"));
        let mut p = small();
        p.sample[0].location_id.push(999);
        assert!(check_valid(&p).is_err());
        let mut p = small();
        p.location[0].id = 0;
        assert!(check_valid(&p).is_err());
        // Sparse but unique ids are fine; repeated ones are not.
        let mut p = small();
        for l in &mut p.location {
            l.id *= 10;
        }
        for s in &mut p.sample {
            for id in &mut s.location_id {
                *id *= 10;
            }
        }
        check_valid(&p).unwrap();
        p.location[1].id = p.location[0].id;
        assert!(
            check_valid(&p)
                .unwrap_err()
                .to_string()
                .contains("repeated")
        );
        let mut p = small();
        p.sample[0].location_id[0] = 0;
        assert!(check_valid(&p).is_err());
        let mut p = small();
        p.function[0].name = 1000;
        assert!(check_valid(&p).is_err());
    }
}
