//! Pyroscope's ingest limits: the rules its distributor applies to every profile before
//! storing it (`pkg/validation/validate.go`, `ValidateProfile` and `ValidateLabels`), with its
//! defaults and option names, so that a profile Pyroscope would refuse is refused here first —
//! by the receiver (400 to the client) and by the writer (before sending, never retried).
//!
//! | option ([`IngestLimits`] field, Pyroscope's name) | default | [`Rule`] when broken |
//! |---|---|---|
//! | `max_profile_size_bytes` (the *decompressed* pprof) | 4 MiB | `profile_size_limit` |
//! | `max_profile_stacktrace_samples` | 16 000 | `samples_limit` |
//! | `max_profile_stacktrace_sample_labels` (labels of one sample) | 100 | `sample_labels_limit` |
//! | `reject_older_than` (`time_nanos` older than now minus this) | 1h | `not_in_ingestion_window` |
//! | `reject_newer_than` (`time_nanos` newer than now plus this) | 10m | `not_in_ingestion_window` |
//! | `max_label_names_per_series` (after sample labels are promoted) | 30 | `max_label_names_per_series` |
//! | `max_label_name_length` (bytes) | 1024 | `label_name_too_long` |
//! | `max_label_value_length` (bytes) | 2048 | `label_value_too_long` |
//! | sample type names contain no `-` (always) | — | `malformed_profile` |
//! | sample/period types and units contain no `:` (always; pyro only) | — | `malformed_profile` |
//!
//! `0` turns a limit off, as in Pyroscope. A `time_nanos` of 0 (or less) means "now" and is
//! always inside the window.
//!
//! **Sample labels are series labels.** Pyroscope splits a profile by its pprof sample labels:
//! every string sample label except `trace_id`, `span_id` and `profile_id` becomes a series
//! label (the series' own label wins on a clash), and each resulting label set must pass the
//! label rules. [`series_label_sets`] computes those sets; [`IngestLimits::check`] validates
//! each, so a profile whose 25 series labels plus 6 sample label names make 31 is refused.
//!
//! The `:` rule is stricter than Pyroscope, which stores such a profile but builds its
//! profile-type id `name:type:unit:period_type:period_unit` from these strings, so the series
//! can never be selected again.
//!
//! ```
//! use std::time::SystemTime;
//! use pyro_core::limits::{IngestLimits, Rule};
//! use pyro_core::pprof::ProfileBuilder;
//! use pyro_core::Labels;
//!
//! let labels = Labels::from_iter([("__name__", "process_cpu"), ("service_name", "api")]);
//! let mut b = ProfileBuilder::cpu(100);
//! b.add_folded(&["main", "work"], &[10_000_000]);
//! let mut profile = b.build();
//! let limits = IngestLimits::default();
//! assert!(limits.check(&labels, &profile, SystemTime::now()).is_ok());
//!
//! profile.time_nanos = 1_000_000_000; // 1970: far outside the ingestion window
//! let e = limits.check(&labels, &profile, SystemTime::now()).unwrap_err();
//! assert_eq!(e.rule(), Rule::NotInIngestionWindow);
//! assert!(e.to_string().contains("reject_older_than"));
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;

use crate::config::format_duration;
use crate::labels::{LabelError, LabelLimits, Labels};
use crate::pprof::Profile;

/// The rule a refused profile broke: Pyroscope's discard reason tag (the `reason` label of its
/// `pyroscope_discarded_samples_total`), used as the `reason` of pyro's drop counters too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// `time_nanos` outside `(now - reject_older_than, now + reject_newer_than)`.
    NotInIngestionWindow,
    /// The decompressed profile is larger than `max_profile_size_bytes`.
    ProfileSizeLimit,
    /// More samples than `max_profile_stacktrace_samples`.
    SamplesLimit,
    /// A sample has more labels than `max_profile_stacktrace_sample_labels`.
    SampleLabelsLimit,
    /// A sample type or unit name breaks the syntax.
    MalformedProfile,
    /// A series has more label names than `max_label_names_per_series`.
    MaxLabelNamesPerSeries,
    /// A label name is longer than `max_label_name_length`.
    LabelNameTooLong,
    /// A label value is longer than `max_label_value_length`.
    LabelValueTooLong,
    /// A label name or value, or `__name__`, is invalid.
    InvalidLabels,
    /// A label name repeats.
    DuplicateLabelNames,
    /// A series has no labels.
    MissingLabels,
}

impl Rule {
    /// Every rule, in the order of [`IngestLimits::check`].
    pub const ALL: [Rule; 11] = [
        Rule::NotInIngestionWindow,
        Rule::ProfileSizeLimit,
        Rule::SamplesLimit,
        Rule::SampleLabelsLimit,
        Rule::MalformedProfile,
        Rule::MaxLabelNamesPerSeries,
        Rule::LabelNameTooLong,
        Rule::LabelValueTooLong,
        Rule::InvalidLabels,
        Rule::DuplicateLabelNames,
        Rule::MissingLabels,
    ];

    /// Pyroscope's reason tag (`profile_size_limit`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotInIngestionWindow => "not_in_ingestion_window",
            Self::ProfileSizeLimit => "profile_size_limit",
            Self::SamplesLimit => "samples_limit",
            Self::SampleLabelsLimit => "sample_labels_limit",
            Self::MalformedProfile => "malformed_profile",
            Self::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Self::LabelNameTooLong => "label_name_too_long",
            Self::LabelValueTooLong => "label_value_too_long",
            Self::InvalidLabels => "invalid_labels",
            Self::DuplicateLabelNames => "duplicate_label_names",
            Self::MissingLabels => "missing_labels",
        }
    }

    /// The rule a label error breaks.
    pub fn of_label_error(e: &LabelError) -> Self {
        match e {
            LabelError::Empty => Self::MissingLabels,
            LabelError::TooManyNames { .. } => Self::MaxLabelNamesPerSeries,
            LabelError::NameTooLong { .. } => Self::LabelNameTooLong,
            LabelError::ValueTooLong { .. } => Self::LabelValueTooLong,
            LabelError::DuplicateName { .. } => Self::DuplicateLabelNames,
            _ => Self::InvalidLabels,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which name of a profile's value types breaks the syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueTypeField {
    /// A sample type's type (`cpu`).
    SampleType,
    /// A sample type's unit (`nanoseconds`).
    SampleUnit,
    /// The period type's type.
    PeriodType,
    /// The period type's unit.
    PeriodUnit,
}

impl fmt::Display for ValueTypeField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SampleType => "sample type",
            Self::SampleUnit => "sample unit",
            Self::PeriodType => "period type",
            Self::PeriodUnit => "period unit",
        })
    }
}

/// A profile breaks an ingest limit. The message names the rule ([`LimitError::rule`]) and the
/// option that sets the limit; `labels` is the series, cut to 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// `time_nanos` is outside the ingestion window.
    #[error(
        "profile with labels '{labels}' is outside of the ingestion window: time_nanos {time_nanos} is {} in the {} (limit {option} = {}) (rule not_in_ingestion_window)",
        format_duration(*.offset), if *.future { "future" } else { "past" }, format_duration(*.limit)
    )]
    NotInIngestionWindow {
        /// The series.
        labels: String,
        /// The profile's `time_nanos`.
        time_nanos: i64,
        /// How far from now it is.
        offset: Duration,
        /// Whether it is in the future (else in the past).
        future: bool,
        /// `reject_newer_than` or `reject_older_than`.
        option: &'static str,
        /// That option's value.
        limit: Duration,
    },
    /// The decompressed profile is too large.
    #[error(
        "the profile with labels '{labels}' exceeds the size limit (max_profile_size_bytes, decompressed size: {size}, limit: {limit}) (rule profile_size_limit)"
    )]
    ProfileTooLarge {
        /// The series.
        labels: String,
        /// The decompressed size in bytes (at least `limit + 1` when decoding stopped there).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many samples.
    #[error(
        "the profile with labels '{labels}' exceeds the samples count limit (max_profile_stacktrace_samples, actual: {count}, limit: {limit}) (rule samples_limit)"
    )]
    TooManySamples {
        /// The series.
        labels: String,
        /// How many samples.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A sample has too many labels.
    #[error(
        "the profile with labels '{labels}' exceeds the sample labels limit (max_profile_stacktrace_sample_labels, actual: {count}, limit: {limit}) (rule sample_labels_limit)"
    )]
    TooManySampleLabels {
        /// The series.
        labels: String,
        /// Labels of the worst sample.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A sample type name contains `-`, or a type or unit contains `:`.
    #[error(
        "the profile with labels '{labels}' has {field} {value:?}, which contains {ch:?} (rule malformed_profile: sample type and unit names)"
    )]
    InvalidValueType {
        /// The series.
        labels: String,
        /// Which name.
        field: ValueTypeField,
        /// The name.
        value: String,
        /// The character not allowed.
        ch: char,
    },
    /// A series' label set (after sample labels were promoted, for [`IngestLimits::check`])
    /// breaks a label rule.
    #[error("profile series '{labels}' breaks a label rule: {source}")]
    Labels {
        /// The label set that failed, sample labels included.
        labels: String,
        /// The label rule.
        #[source]
        source: LabelError,
    },
}

impl LimitError {
    /// The rule broken.
    pub fn rule(&self) -> Rule {
        match self {
            Self::NotInIngestionWindow { .. } => Rule::NotInIngestionWindow,
            Self::ProfileTooLarge { .. } => Rule::ProfileSizeLimit,
            Self::TooManySamples { .. } => Rule::SamplesLimit,
            Self::TooManySampleLabels { .. } => Rule::SampleLabelsLimit,
            Self::InvalidValueType { .. } => Rule::MalformedProfile,
            Self::Labels { source, .. } => Rule::of_label_error(source),
        }
    }
}

/// Pyroscope's per-tenant ingest limits (its `limits` block), with its defaults. Plain serde
/// data; unknown fields are refused.
///
/// ```
/// let l: pyro_core::limits::IngestLimits = serde_json::from_str(
///     r#"{"max_profile_size_bytes": 1048576, "reject_older_than": "2h"}"#,
/// ).unwrap();
/// assert_eq!(l.max_profile_size_bytes, 1 << 20);
/// assert_eq!(l.reject_newer_than, std::time::Duration::from_secs(600));
/// assert!(serde_json::from_str::<pyro_core::limits::IngestLimits>(r#"{"max_profile_size": 1}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestLimits {
    /// `max_label_names_per_series` (`validation.max-label-names-per-series`): label names of a
    /// series, counted after sample labels are promoted. Default 30.
    pub max_label_names_per_series: usize,
    /// `max_label_name_length` (`validation.max-length-label-name`), bytes. Default 1024.
    pub max_label_name_length: usize,
    /// `max_label_value_length` (`validation.max-length-label-value`), bytes; `__name__` too.
    /// Default 2048.
    pub max_label_value_length: usize,
    /// `max_profile_size_bytes` (`validation.max-profile-size-bytes`): the decompressed pprof.
    /// Default 4 MiB (4 194 304).
    pub max_profile_size_bytes: usize,
    /// `max_profile_stacktrace_samples` (`validation.max-profile-stacktrace-samples`).
    /// Default 16 000.
    pub max_profile_stacktrace_samples: usize,
    /// `max_profile_stacktrace_sample_labels`
    /// (`validation.max-profile-stacktrace-sample-labels`): labels of one sample. Default 100.
    pub max_profile_stacktrace_sample_labels: usize,
    /// `reject_older_than` (`validation.reject-older-than`): how far in the past `time_nanos`
    /// may be. Default 1h.
    #[serde(with = "crate::config::duration")]
    pub reject_older_than: Duration,
    /// `reject_newer_than` (`validation.reject-newer-than`): how far in the future `time_nanos`
    /// may be. Default 10m.
    #[serde(with = "crate::config::duration")]
    pub reject_newer_than: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_profile_size_bytes: 4 << 20,
            max_profile_stacktrace_samples: 16_000,
            max_profile_stacktrace_sample_labels: 100,
            reject_older_than: Duration::from_secs(3600),
            reject_newer_than: Duration::from_secs(600),
        }
    }
}

/// Pprof sample label keys that are never promoted to series labels (span profiles).
const NOT_PROMOTED: [&str; 3] = ["trace_id", "span_id", "profile_id"];

/// The label sets a profile is stored under once Pyroscope promotes its pprof sample labels:
/// one per distinct set of string sample labels (keys `trace_id`, `span_id`, `profile_id` and
/// empty values left out), `labels` winning on a clash. A profile without sample labels gives
/// just `labels`.
pub fn series_label_sets(labels: &Labels, profile: &Profile) -> Vec<Labels> {
    let mut distinct: BTreeSet<Vec<(&str, &str)>> = BTreeSet::new();
    for s in &profile.sample {
        let mut set: Vec<(&str, &str)> = s
            .label
            .iter()
            .filter(|l| l.str != 0)
            .map(|l| (profile.string(l.key), profile.string(l.str)))
            .filter(|(k, v)| !v.is_empty() && !NOT_PROMOTED.contains(k))
            .collect();
        set.sort_unstable();
        set.dedup_by(|a, b| a.0 == b.0);
        distinct.insert(set);
    }
    if distinct.is_empty() {
        return vec![labels.clone()];
    }
    distinct
        .into_iter()
        .map(|set| {
            let mut l = labels.clone();
            for (k, v) in set {
                l.set_if_absent(k, v);
            }
            l
        })
        .collect()
}

fn nanos_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl IngestLimits {
    /// Every limit off (the syntax rules and the label grammar still apply).
    pub fn disabled() -> Self {
        Self {
            max_label_names_per_series: 0,
            max_label_name_length: 0,
            max_label_value_length: 0,
            max_profile_size_bytes: 0,
            max_profile_stacktrace_samples: 0,
            max_profile_stacktrace_sample_labels: 0,
            reject_older_than: Duration::ZERO,
            reject_newer_than: Duration::ZERO,
        }
    }

    /// The label limits, for [`Labels::validate_with`].
    pub fn labels(&self) -> LabelLimits {
        LabelLimits {
            max_label_names_per_series: self.max_label_names_per_series,
            max_label_name_length: self.max_label_name_length,
            max_label_value_length: self.max_label_value_length,
        }
    }

    /// Checks a decompressed size against `max_profile_size_bytes` (for a caller that knows the
    /// size before decoding, or stopped decompressing at the limit).
    pub fn check_size(&self, labels: &Labels, size: usize) -> Result<(), LimitError> {
        let limit = self.max_profile_size_bytes;
        if limit != 0 && size > limit {
            return Err(LimitError::ProfileTooLarge {
                labels: labels.to_short_string(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// Checks a decoded profile of series `labels` against every rule, in Pyroscope's order:
    /// ingestion window, decompressed size (the profile's encoded length, Pyroscope's
    /// `SizeVT`), sample count, labels per sample, sample type names, then the label sets after
    /// sample labels are promoted ([`series_label_sets`]). The first failure is returned.
    pub fn check(
        &self,
        labels: &Labels,
        profile: &Profile,
        now: SystemTime,
    ) -> Result<(), LimitError> {
        self.check_time(labels, profile.time_nanos, now)?;
        self.check_size(labels, profile.encoded_len())?;
        let limit = self.max_profile_stacktrace_samples;
        if limit != 0 && profile.sample.len() > limit {
            return Err(LimitError::TooManySamples {
                labels: labels.to_short_string(),
                count: profile.sample.len(),
                limit,
            });
        }
        let limit = self.max_profile_stacktrace_sample_labels;
        if limit != 0
            && let Some(count) = profile
                .sample
                .iter()
                .map(|s| s.label.len())
                .filter(|&n| n > limit)
                .max()
        {
            return Err(LimitError::TooManySampleLabels {
                labels: labels.to_short_string(),
                count,
                limit,
            });
        }
        check_value_types(labels, profile)?;
        let label_limits = self.labels();
        for set in series_label_sets(labels, profile) {
            set.validate_with(&label_limits)
                .map_err(|source| LimitError::Labels {
                    labels: set.to_short_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Checks `time_nanos` against the ingestion window around `now` (`<= 0` means now).
    pub fn check_time(
        &self,
        labels: &Labels,
        time_nanos: i64,
        now: SystemTime,
    ) -> Result<(), LimitError> {
        if time_nanos <= 0 {
            return Ok(());
        }
        let now = nanos_since_epoch(now);
        let t = i128::from(time_nanos);
        let offset = |d: i128| Duration::from_nanos(u64::try_from(d).unwrap_or(u64::MAX));
        // Pyroscope's window is open at both ends: `t.After(from) && t.Before(to)`.
        let newer = self.reject_newer_than;
        if !newer.is_zero() && t >= now + newer.as_nanos() as i128 {
            return Err(LimitError::NotInIngestionWindow {
                labels: labels.to_short_string(),
                time_nanos,
                offset: offset(t - now),
                future: true,
                option: "reject_newer_than",
                limit: newer,
            });
        }
        let older = self.reject_older_than;
        if !older.is_zero() && t <= now - older.as_nanos() as i128 {
            return Err(LimitError::NotInIngestionWindow {
                labels: labels.to_short_string(),
                time_nanos,
                offset: offset(now - t),
                future: false,
                option: "reject_older_than",
                limit: older,
            });
        }
        Ok(())
    }
}

/// Sample type names must not contain `-` (Pyroscope's rule); no type or unit may contain `:`,
/// the separator of the profile-type id.
fn check_value_types(labels: &Labels, profile: &Profile) -> Result<(), LimitError> {
    let bad = |field, value: &str, ch| {
        Err(LimitError::InvalidValueType {
            labels: labels.to_short_string(),
            field,
            value: value.to_owned(),
            ch,
        })
    };
    for vt in &profile.sample_type {
        let (ty, unit) = (profile.string(vt.r#type), profile.string(vt.unit));
        if ty.contains('-') {
            return bad(ValueTypeField::SampleType, ty, '-');
        }
        if ty.contains(':') {
            return bad(ValueTypeField::SampleType, ty, ':');
        }
        if unit.contains(':') {
            return bad(ValueTypeField::SampleUnit, unit, ':');
        }
    }
    if let Some(vt) = &profile.period_type {
        let (ty, unit) = (profile.string(vt.r#type), profile.string(vt.unit));
        if ty.contains(':') {
            return bad(ValueTypeField::PeriodType, ty, ':');
        }
        if unit.contains(':') {
            return bad(ValueTypeField::PeriodUnit, unit, ':');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::{ProfileBuilder, encode};

    fn series() -> Labels {
        Labels::from_iter([("__name__", "process_cpu"), ("service_name", "svc")])
    }

    fn profile() -> Profile {
        let mut b = ProfileBuilder::cpu(100);
        b.add_folded(&["main", "work"], &[10_000_000]);
        b.build()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn defaults_are_pyroscopes() {
        let l = IngestLimits::default();
        assert_eq!(l.max_profile_size_bytes, 4_194_304);
        assert_eq!(l.max_label_names_per_series, 30);
        assert_eq!(l.reject_older_than, Duration::from_secs(3600));
        assert_eq!(l.reject_newer_than, Duration::from_secs(600));
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["reject_older_than"], "1h0m0s");
        let back: IngestLimits = serde_json::from_value(json).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn ingestion_window_is_open_at_both_ends() {
        let l = IngestLimits::default();
        let s = series();
        let ns = |secs: u64| i64::try_from(secs * 1_000_000_000).unwrap();
        assert!(l.check_time(&s, 0, at(NOW)).is_ok());
        assert!(l.check_time(&s, ns(NOW - 3599), at(NOW)).is_ok());
        assert!(l.check_time(&s, ns(NOW + 599), at(NOW)).is_ok());
        let e = l.check_time(&s, ns(NOW - 3600), at(NOW)).unwrap_err();
        assert_eq!(e.rule(), Rule::NotInIngestionWindow);
        assert!(e.to_string().contains("reject_older_than"), "{e}");
        let e = l.check_time(&s, ns(NOW + 600), at(NOW)).unwrap_err();
        assert!(e.to_string().contains("10m0s in the future"), "{e}");
        assert!(IngestLimits::disabled().check_time(&s, 1, at(NOW)).is_ok());
    }

    #[test]
    fn size_is_the_decoded_size() {
        let p = profile();
        let size = encode(&p).len();
        let l = IngestLimits {
            max_profile_size_bytes: size,
            ..IngestLimits::default()
        };
        assert!(l.check(&series(), &p, SystemTime::now()).is_ok());
        let l = IngestLimits {
            max_profile_size_bytes: size - 1,
            ..l
        };
        let e = l.check(&series(), &p, SystemTime::now()).unwrap_err();
        assert_eq!(e.rule(), Rule::ProfileSizeLimit);
        assert!(e.to_string().contains("max_profile_size_bytes"), "{e}");
    }

    #[test]
    fn sample_count_and_labels_per_sample() {
        let mut b = ProfileBuilder::cpu(100);
        let leaf = b.frame("f");
        for i in 0..5 {
            let v = i.to_string();
            b.add_sample_with_labels(&[leaf], &[1], &[("a", &v), ("b", "1"), ("c", "1")]);
        }
        let p = b.build();
        let l = IngestLimits {
            max_profile_stacktrace_samples: 4,
            ..IngestLimits::default()
        };
        let e = l.check(&series(), &p, SystemTime::now()).unwrap_err();
        assert_eq!(e.rule(), Rule::SamplesLimit);
        let l = IngestLimits {
            max_profile_stacktrace_sample_labels: 2,
            ..IngestLimits::default()
        };
        let e = l.check(&series(), &p, SystemTime::now()).unwrap_err();
        assert_eq!(
            e,
            LimitError::TooManySampleLabels {
                labels: series().to_string(),
                count: 3,
                limit: 2
            }
        );
    }

    #[test]
    fn value_type_syntax() {
        for (types, field) in [
            (("alloc-space", "bytes"), ValueTypeField::SampleType),
            (("cpu", "nano:seconds"), ValueTypeField::SampleUnit),
        ] {
            let mut b = ProfileBuilder::new(&[types]);
            b.add_folded(&["main"], &[1]);
            let e = IngestLimits::default()
                .check(&series(), &b.build(), SystemTime::now())
                .unwrap_err();
            assert_eq!(e.rule(), Rule::MalformedProfile);
            assert!(matches!(e, LimitError::InvalidValueType { field: f, .. } if f == field));
        }
        // `-` in a unit is fine (Pyroscope only checks the type).
        let mut b = ProfileBuilder::new(&[("cpu", "nano-seconds")]);
        b.add_folded(&["main"], &[1]);
        assert!(
            IngestLimits::default()
                .check(&series(), &b.build(), SystemTime::now())
                .is_ok()
        );
    }

    #[test]
    fn sample_labels_count_as_series_labels() {
        let mut s = series();
        for i in 0..26 {
            s.set(format!("l{i}"), "v");
        }
        assert_eq!(s.len(), 28);
        let mut b = ProfileBuilder::cpu(100);
        let leaf = b.frame("f");
        // Span labels are not promoted; a clash keeps the series' value.
        b.add_sample_with_labels(
            &[leaf],
            &[1],
            &[
                ("trace_id", "t"),
                ("span_id", "s"),
                ("l0", "x"),
                ("thread", "1"),
            ],
        );
        let ok = b.build();
        let sets = series_label_sets(&s, &ok);
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 29);
        assert_eq!(sets[0].get("l0"), Some("v"));
        assert!(
            IngestLimits::default()
                .check(&s, &ok, SystemTime::now())
                .is_ok()
        );

        let mut b = ProfileBuilder::cpu(100);
        let leaf = b.frame("f");
        b.add_sample_with_labels(&[leaf], &[1], &[("thread", "1")]);
        b.add_sample_with_labels(
            &[leaf],
            &[1],
            &[("thread", "2"), ("pool", "io"), ("x", "y")],
        );
        let bad = b.build();
        assert_eq!(series_label_sets(&s, &bad).len(), 2);
        let e = IngestLimits::default()
            .check(&s, &bad, SystemTime::now())
            .unwrap_err();
        assert_eq!(e.rule(), Rule::MaxLabelNamesPerSeries);
        assert!(e.to_string().contains("31 names"), "{e}");
        // The series alone passes.
        assert!(
            IngestLimits::default()
                .check(&s, &profile(), SystemTime::now())
                .is_ok()
        );
    }

    #[test]
    fn label_lengths_apply_to_promoted_labels() {
        let mut b = ProfileBuilder::cpu(100);
        let leaf = b.frame("f");
        let long = "v".repeat(2049);
        b.add_sample_with_labels(&[leaf], &[1], &[("k", &long)]);
        let e = IngestLimits::default()
            .check(&series(), &b.build(), SystemTime::now())
            .unwrap_err();
        assert_eq!(e.rule(), Rule::LabelValueTooLong);
        let mut s = series();
        s.set("n".repeat(1025), "v");
        let e = IngestLimits::default()
            .check(&s, &profile(), SystemTime::now())
            .unwrap_err();
        assert_eq!(e.rule(), Rule::LabelNameTooLong);
    }
}
