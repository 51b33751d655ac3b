//! Label sets and the rules Pyroscope applies to them at ingest.
//!
//! [`Labels`] is a set of name/value pairs kept sorted by name, with at most one value per name.
//! It is cheap to clone (one reference count) and copies itself only when a clone is changed.
//!
//! A `Labels` may hold anything — discovery metadata such as `__meta_process_commandline` is
//! routinely longer than Pyroscope allows — so building one never fails on content. Whether a set
//! can be *sent* is a separate question answered by [`Labels::validate`], which applies the rules
//! of Pyroscope's distributor (`pkg/validation/validate.go`) and names the rule and the label that
//! broke it.

use std::fmt;
use std::sync::Arc;

/// Well-known label names.
pub mod names {
    /// The profile type ("metric name"), e.g. `process_cpu`. Pyroscope requires it.
    pub const METRIC_NAME: &str = "__name__";
    /// `"false"` tells Pyroscope the profile already holds per-interval (delta) values.
    pub const DELTA: &str = "__delta__";
    /// The service a profile belongs to.
    pub const SERVICE_NAME: &str = "service_name";
    /// The application name an `/ingest` client sent when `service_name` was given explicitly.
    pub const APP_NAME: &str = "app_name";
    /// The process id a target matches (discovery label).
    pub const PROCESS_PID: &str = "__process_pid__";
    /// A container id (64 hex characters) a target matches.
    pub const CONTAINER_ID: &str = "__container_id__";
    /// Container id from Docker discovery.
    pub const DOCKER_CONTAINER_ID: &str = "__meta_docker_container_id";
    /// Container name from Docker discovery (used for `service_name` inference).
    pub const DOCKER_CONTAINER_NAME: &str = "__meta_docker_container_name";
    /// Container id from Kubernetes discovery, with a runtime prefix (`docker://` …).
    pub const K8S_POD_CONTAINER_ID: &str = "__meta_kubernetes_pod_container_id";
    /// Kubernetes namespace (used for `service_name` inference).
    pub const K8S_NAMESPACE: &str = "__meta_kubernetes_namespace";
    /// Kubernetes container name (used for `service_name` inference).
    pub const K8S_POD_CONTAINER_NAME: &str = "__meta_kubernetes_pod_container_name";
    /// The `pyroscope.io/service_name` pod annotation (used for `service_name` inference).
    pub const K8S_SERVICE_NAME_ANNOTATION: &str =
        "__meta_kubernetes_pod_annotation_pyroscope_io_service_name";
    /// The profiling client's name on the legacy `/ingest` API.
    pub const PYROSCOPE_SPY: &str = "pyroscope_spy";
    /// Prefix of discovery metadata labels, dropped before profiles are sent.
    pub const META_PREFIX: &str = "__meta_";
    /// Prefix of reserved labels; all but [`METRIC_NAME`] and [`DELTA`] are dropped before
    /// profiles are sent.
    pub const RESERVED_PREFIX: &str = "__";
}

/// Limits Pyroscope applies to a series' labels (server defaults).
pub mod limits {
    /// `validation.max-label-names-per-series`.
    pub const MAX_LABEL_NAMES: usize = 30;
    /// `validation.max-length-label-name`, in bytes.
    pub const MAX_NAME_LEN: usize = 1024;
    /// `validation.max-length-label-value`, in bytes.
    pub const MAX_VALUE_LEN: usize = 2048;
}

/// The configurable label limits of [`Labels::validate_with`] (Pyroscope's
/// `max_label_names_per_series`, `max_label_name_length`, `max_label_value_length`). `0` turns a
/// limit off. The default is Pyroscope's ([`limits`]); [`crate::limits::IngestLimits::labels`]
/// gives the ones a host configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    /// The most label names a series may have.
    pub max_label_names_per_series: usize,
    /// The longest label name, in bytes.
    pub max_label_name_length: usize,
    /// The longest label value (also `__name__`'s), in bytes.
    pub max_label_value_length: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        Self {
            max_label_names_per_series: limits::MAX_LABEL_NAMES,
            max_label_name_length: limits::MAX_NAME_LEN,
            max_label_value_length: limits::MAX_VALUE_LEN,
        }
    }
}

/// Whether `len` is over `limit`, `0` meaning no limit.
fn over(len: usize, limit: usize) -> bool {
    limit != 0 && len > limit
}

/// One name/value pair. The strings are shared (`Arc<str>`), so copying a label from one set to
/// another — what enrichment and joins do for every profile — costs two reference counts, not
/// two allocations.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    name: Arc<str>,
    value: Arc<str>,
}

impl Label {
    /// A pair from anything string-like.
    pub fn new(name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The label value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.name, self.value)
    }
}

/// A label set that breaks a Pyroscope ingest rule.
///
/// Each variant names the offending label; [`LabelError::rule`] gives the reason tag Pyroscope
/// itself reports (`invalid_labels`, `duplicate_label_names`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// The set is empty.
    #[error("label set is empty: at least one label is required (rule missing_labels)")]
    Empty,
    /// More names than Pyroscope accepts per series.
    #[error("label set has {count} names; the limit is {limit} (rule max_label_names_per_series)")]
    TooManyNames {
        /// How many names the set has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A label name is empty.
    #[error("a label name is empty (rule invalid_labels)")]
    EmptyName,
    /// A label name is longer than the limit.
    #[error("label name {name:?} is {len} bytes; the limit is {limit} (rule label_name_too_long)")]
    NameTooLong {
        /// The name, cut to 64 bytes.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A label name uses characters Pyroscope rejects.
    #[error(
        "label name {name:?} is invalid: names must match [a-zA-Z_.][a-zA-Z0-9_.]* (rule invalid_labels)"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A label value is longer than the limit.
    #[error(
        "value of label {name:?} is {len} bytes; the limit is {limit} (rule label_value_too_long)"
    )]
    ValueTooLong {
        /// The label name.
        name: String,
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A label value is empty (an empty value means "no such label").
    #[error("label {name:?} has an empty value (rule invalid_labels)")]
    EmptyValue {
        /// The label name.
        name: String,
    },
    /// The same name appears twice, or two names collide once Pyroscope rewrites `.` to `_`.
    #[error("label name {name:?} appears more than once (rule duplicate_label_names)")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// `__name__` (the profile type) is missing.
    #[error(
        "label __name__ (the profile type) is missing (rule invalid_labels: invalid metric name)"
    )]
    MissingMetricName,
    /// `__name__` is not a valid profile type name.
    #[error(
        "label __name__ has value {value:?}, which is not a valid profile type: it must match [a-zA-Z_][a-zA-Z0-9_]* (rule invalid_labels: invalid metric name)"
    )]
    InvalidMetricName {
        /// The value.
        value: String,
    },
}

impl LabelError {
    /// The reason tag Pyroscope reports for this failure.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Empty => "missing_labels",
            Self::TooManyNames { .. } => "max_label_names_per_series",
            Self::NameTooLong { .. } => "label_name_too_long",
            Self::ValueTooLong { .. } => "label_value_too_long",
            Self::DuplicateName { .. } => "duplicate_label_names",
            Self::EmptyName
            | Self::InvalidName { .. }
            | Self::EmptyValue { .. }
            | Self::MissingMetricName
            | Self::InvalidMetricName { .. } => "invalid_labels",
        }
    }

    /// The label this error is about, if it is about one.
    pub fn label_name(&self) -> Option<&str> {
        match self {
            Self::NameTooLong { name, .. }
            | Self::InvalidName { name }
            | Self::ValueTooLong { name, .. }
            | Self::EmptyValue { name }
            | Self::DuplicateName { name } => Some(name),
            Self::MissingMetricName | Self::InvalidMetricName { .. } => Some(names::METRIC_NAME),
            Self::Empty | Self::TooManyNames { .. } | Self::EmptyName => None,
        }
    }
}

/// Whether `name` is a label name Pyroscope accepts on every server version in use: after `.` is
/// rewritten to `_` it must match `[a-zA-Z_][a-zA-Z0-9_]*` (so `service.version` is fine).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b'.' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Whether `value` is a valid `__name__`: `[a-zA-Z_][a-zA-Z0-9_]*`. (Prometheus also allows `:`,
/// but a `:` breaks Pyroscope's profile-type id, so it is refused here.)
pub fn is_valid_metric_name(value: &str) -> bool {
    is_legacy_label_name(value)
}

/// Whether `name` matches Prometheus' legacy label-name grammar `[a-zA-Z_][a-zA-Z0-9_]*`: the
/// one grammar behind `__name__` checks and relabelling's legacy name validation.
pub fn is_legacy_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn truncated(name: &str) -> String {
    prefix(name, 64).to_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bytes of a label set's text kept in error messages ([`Labels::to_short_string`]).
const SHORT_STRING_BYTES: usize = 256;

/// A set of labels, sorted by name, one value per name. Cheap to clone.
///
/// ```
/// use pyro_core::labels::{names, Labels};
///
/// let mut labels = Labels::from_iter([("service_name", "api"), ("__name__", "process_cpu")]);
/// labels.set("env", "prod");
/// assert_eq!(labels.get(names::SERVICE_NAME), Some("api"));
/// // Sorted by name, whatever the insertion order.
/// let names: Vec<_> = labels.iter().map(|l| l.name()).collect();
/// assert_eq!(names, ["__name__", "env", "service_name"]);
/// assert!(labels.validate().is_ok());
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels {
    inner: Arc<Vec<Label>>,
}

impl Labels {
    /// The label set as text (as [`Display`](std::fmt::Display) writes it), cut to 256 bytes
    /// and ended with `…` when longer: for error messages about a label set a peer sent.
    ///
    /// ```
    /// use pyro_core::Labels;
    ///
    /// let short = Labels::from_iter([("a", "b")]);
    /// assert_eq!(short.to_short_string(), short.to_string());
    /// let long = Labels::from_iter([("a", "é".repeat(200))]);
    /// let text = long.to_short_string();
    /// assert!(text.ends_with('…') && text.len() <= 256 + '…'.len_utf8());
    /// ```
    pub fn to_short_string(&self) -> String {
        let text = self.to_string();
        if text.len() <= SHORT_STRING_BYTES {
            return text;
        }
        format!("{}…", prefix(&text, SHORT_STRING_BYTES))
    }

    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from pairs, failing with [`LabelError::DuplicateName`] if a name repeats.
    /// (`FromIterator` instead lets the last value win.)
    pub fn try_from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, LabelError>
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, val)| Label::new(n.into(), val.into()))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = v.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(LabelError::DuplicateName {
                name: w[0].name.to_string(),
            });
        }
        Ok(Self { inner: Arc::new(v) })
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.inner.binary_search_by(|l| (*l.name).cmp(name))
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| &*self.inner[i].value)
    }

    /// The value of `name` if present and non-empty.
    pub fn get_non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `name` to `value`, replacing any previous value. An empty value removes the label,
    /// as in Prometheus relabelling.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        if value.is_empty() {
            self.remove(&name);
            return;
        }
        match self.position(&name) {
            Ok(i) => {
                if *self.inner[i].value != *value {
                    Arc::make_mut(&mut self.inner)[i].value = value.into();
                }
            }
            Err(i) => Arc::make_mut(&mut self.inner).insert(i, Label::new(name, value)),
        }
    }

    /// Sets `name` to `value` only if `name` is absent.
    pub fn set_if_absent(&mut self, name: &str, value: impl Into<String>) {
        if !self.contains(name) {
            self.set(name, value);
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.position(name).ok()?;
        Some(Arc::make_mut(&mut self.inner).remove(i).value.to_string())
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Label) -> bool) {
        // Find the first label to drop without copying; most calls drop nothing.
        let Some(first) = self.inner.iter().position(|l| !keep(l)) else {
            return;
        };
        // `keep` has seen labels up to `first`; it sees each later one exactly once.
        let mut i = 0;
        Arc::make_mut(&mut self.inner).retain(|l| {
            let decision = match i.cmp(&first) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => false,
                std::cmp::Ordering::Greater => keep(l),
            };
            i += 1;
            decision
        });
    }

    /// Sets every label of `other` on this set, replacing values of the same name (an empty
    /// value in `other` removes the label, as [`Labels::set`] does). Equivalent to calling
    /// [`Labels::set`] for each label of `other`, done as one merge of two sorted lists: one
    /// allocation, no repeated searches — for copying many labels at once (enrichment, joins).
    ///
    /// ```
    /// use pyro_core::Labels;
    ///
    /// let mut profile = Labels::from_iter([("__name__", "process_cpu"), ("pod", "old")]);
    /// profile.merge(&Labels::from_iter([("namespace", "shop"), ("pod", "cart-1")]));
    /// assert_eq!(
    ///     profile,
    ///     Labels::from_iter([("__name__", "process_cpu"), ("namespace", "shop"), ("pod", "cart-1")])
    /// );
    /// ```
    pub fn merge(&mut self, other: &Labels) {
        if other.is_empty() {
            return;
        }
        // Take our labels by value when this set is their only holder, else copy them (once,
        // straight into the result).
        let out = match Arc::get_mut(&mut self.inner) {
            Some(own) => merge_sorted(std::mem::take(own).into_iter(), other),
            None => merge_sorted(self.inner.iter().cloned(), other),
        };
        match Arc::get_mut(&mut self.inner) {
            Some(own) => *own = out,
            None => self.inner = Arc::new(out),
        }
    }

    /// Iterates over the labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.inner.iter()
    }

    /// The labels as a slice, in name order.
    pub fn as_slice(&self) -> &[Label] {
        &self.inner
    }

    /// Drops reserved labels (`__`-prefixed, including `__meta_*`) except `__name__` and
    /// `__delta__`: what Alloy's `pyroscope.write` does before sending.
    pub fn drop_reserved(&mut self) {
        self.retain(|l| {
            !l.name.starts_with(names::RESERVED_PREFIX)
                || *l.name == *names::METRIC_NAME
                || *l.name == *names::DELTA
        });
    }

    /// Checks the set against the label rules of Pyroscope's ingest (the defaults of
    /// `pkg/validation`), portable to every server version in use:
    ///
    /// - at least one label, at most [`limits::MAX_LABEL_NAMES`] names;
    /// - `__name__` present and matching `[a-zA-Z_][a-zA-Z0-9_]*`;
    /// - names non-empty, at most [`limits::MAX_NAME_LEN`] bytes, matching
    ///   `[a-zA-Z_.][a-zA-Z0-9_.]*`, and still distinct once `.` becomes `_`;
    /// - values non-empty and at most [`limits::MAX_VALUE_LEN`] bytes.
    ///
    /// The first failure found is returned.
    pub fn validate(&self) -> Result<(), LabelError> {
        self.validate_with(&LabelLimits::default())
    }

    /// [`validate`](Self::validate) with the count and length limits given (`0` turns one off);
    /// the name grammar and the other rules are the same.
    pub fn validate_with(&self, limits: &LabelLimits) -> Result<(), LabelError> {
        if self.is_empty() {
            return Err(LabelError::Empty);
        }
        if over(self.len(), limits.max_label_names_per_series) {
            return Err(LabelError::TooManyNames {
                count: self.len(),
                limit: limits.max_label_names_per_series,
            });
        }
        for l in self.iter() {
            if l.name.is_empty() {
                return Err(LabelError::EmptyName);
            }
            if over(l.name.len(), limits.max_label_name_length) {
                return Err(LabelError::NameTooLong {
                    name: truncated(&l.name),
                    len: l.name.len(),
                    limit: limits.max_label_name_length,
                });
            }
            if !is_valid_label_name(&l.name) {
                return Err(LabelError::InvalidName {
                    name: l.name.to_string(),
                });
            }
            if l.value.is_empty() {
                return Err(LabelError::EmptyValue {
                    name: l.name.to_string(),
                });
            }
            if over(l.value.len(), limits.max_label_value_length) {
                return Err(LabelError::ValueTooLong {
                    name: l.name.to_string(),
                    len: l.value.len(),
                    limit: limits.max_label_value_length,
                });
            }
        }
        match self.get(names::METRIC_NAME) {
            None => return Err(LabelError::MissingMetricName),
            Some(v) if !is_valid_metric_name(v) => {
                return Err(LabelError::InvalidMetricName {
                    value: truncated(v),
                });
            }
            Some(_) => {}
        }
        // Pyroscope rewrites `.` to `_` before checking for duplicates.
        if self.iter().any(|l| l.name.contains('.')) {
            let mut sanitized: Vec<String> =
                self.iter().map(|l| l.name.replace('.', "_")).collect();
            sanitized.sort_unstable();
            if let Some(w) = sanitized.windows(2).find(|w| w[0] == w[1]) {
                let original = self
                    .iter()
                    .find(|l| l.name.replace('.', "_") == w[0] && l.name.contains('.'))
                    .map_or_else(|| w[0].clone(), |l| l.name.to_string());
                return Err(LabelError::DuplicateName { name: original });
            }
        }
        Ok(())
    }
}

/// Merges sorted `own` with sorted `other`, `other` winning on equal names and its empty values
/// removing labels.
fn merge_sorted(own: impl ExactSizeIterator<Item = Label>, other: &Labels) -> Vec<Label> {
    let mut out = Vec::with_capacity(own.len() + other.len());
    let mut a = own.peekable();
    let mut b = other.iter().peekable();
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        match x.name.cmp(&y.name) {
            std::cmp::Ordering::Less => out.extend(a.next()),
            std::cmp::Ordering::Greater => {
                out.extend(b.next().filter(|y| !y.value.is_empty()).cloned());
            }
            std::cmp::Ordering::Equal => {
                if let (Some(mut x), Some(y)) = (a.next(), b.next()) {
                    if y.value.is_empty() {
                        continue;
                    }
                    if x.value != y.value {
                        x.value.clone_from(&y.value);
                    }
                    out.push(x);
                }
            }
        }
    }
    out.extend(a);
    out.extend(b.filter(|y| !y.value.is_empty()).cloned());
    out
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Labels {
    /// Builds a set; when a name repeats, the last value wins. Empty values are kept out.
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        let mut labels = Labels::new();
        for (n, v) in iter {
            labels.set(n, v);
        }
        labels
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Labels {
    /// Prometheus style: `{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid() -> Labels {
        Labels::from_iter([("__name__", "process_cpu"), ("service_name", "svc")])
    }

    #[test]
    fn sorted_and_deduplicated() {
        let l = Labels::from_iter([("b", "1"), ("a", "2"), ("b", "3")]);
        assert_eq!(l.as_slice(), &[Label::new("a", "2"), Label::new("b", "3")]);
        assert_eq!(
            Labels::try_from_pairs([("b", "1"), ("b", "2")]),
            Err(LabelError::DuplicateName { name: "b".into() })
        );
    }

    #[test]
    fn set_empty_removes_and_clone_is_copy_on_write() {
        let mut a = valid();
        let b = a.clone();
        a.set("service_name", "");
        assert!(!a.contains("service_name"));
        assert_eq!(b.get("service_name"), Some("svc"));
    }

    #[test]
    fn merge_is_set_for_each_label() {
        let base = Labels::from_iter([("a", "1"), ("c", "3"), ("e", "5")]);
        let other =
            Labels::try_from_pairs([("a", "x"), ("b", "2"), ("c", ""), ("f", "6")]).unwrap();
        let mut expected = base.clone();
        for l in &other {
            expected.set(l.name().to_owned(), l.value().to_owned());
        }
        let mut shared = base.clone();
        shared.merge(&other);
        assert_eq!(shared, expected);
        assert_eq!(
            base.get("a"),
            Some("1"),
            "a shared set is copied, not changed"
        );
        let mut unique = Labels::from_iter([("a", "1"), ("c", "3"), ("e", "5")]);
        unique.merge(&other);
        assert_eq!(unique, expected);
        let mut empty = Labels::new();
        empty.merge(&other);
        assert_eq!(
            empty,
            Labels::from_iter([("a", "x"), ("b", "2"), ("f", "6")])
        );
        unique.merge(&Labels::new());
        assert_eq!(unique, expected);
    }

    #[test]
    fn retain_asks_once_per_label_and_shares_when_nothing_drops() {
        let mut l = Labels::from_iter([("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
        let before = l.clone();
        let mut asked = Vec::new();
        l.retain(|x| {
            asked.push(x.name().to_owned());
            true
        });
        assert!(
            Arc::ptr_eq(&l.inner, &before.inner),
            "no copy when nothing is dropped"
        );
        asked.clear();
        l.retain(|x| {
            asked.push(x.name().to_owned());
            x.name() != "b" && x.name() != "d"
        });
        assert_eq!(asked, ["a", "b", "c", "d"]);
        assert_eq!(l, Labels::from_iter([("a", "1"), ("c", "3")]));
        assert_eq!(before.len(), 4);
    }

    #[test]
    fn drop_reserved_keeps_name_and_delta() {
        let mut l = Labels::from_iter([
            ("__name__", "x"),
            ("__delta__", "false"),
            ("__meta_x", "1"),
            ("__process_pid__", "1"),
            ("a", "b"),
        ]);
        l.drop_reserved();
        let names: Vec<_> = l.iter().map(|l| l.name()).collect();
        assert_eq!(names, ["__delta__", "__name__", "a"]);
    }

    #[test]
    fn each_rule_names_rule_and_label() {
        let mut l = valid();
        l.set("bad-name", "x");
        let e = l.validate().unwrap_err();
        assert_eq!(
            e,
            LabelError::InvalidName {
                name: "bad-name".into()
            }
        );
        assert_eq!(e.rule(), "invalid_labels");
        assert!(e.to_string().contains("bad-name"));

        let mut l = valid();
        l.set("long", "v".repeat(2049));
        let e = l.validate().unwrap_err();
        assert_eq!(e.rule(), "label_value_too_long");
        assert_eq!(e.label_name(), Some("long"));

        let mut l = valid();
        l.set("n".repeat(1025), "v");
        assert_eq!(l.validate().unwrap_err().rule(), "label_name_too_long");

        let mut l = valid();
        for i in 0..29 {
            l.set(format!("l{i}"), "v");
        }
        let e = l.validate().unwrap_err();
        assert_eq!(
            e,
            LabelError::TooManyNames {
                count: 31,
                limit: 30
            }
        );

        let l = Labels::from_iter([("service_name", "svc")]);
        assert_eq!(l.validate(), Err(LabelError::MissingMetricName));
        let l = Labels::from_iter([("__name__", "process:cpu")]);
        assert!(matches!(
            l.validate(),
            Err(LabelError::InvalidMetricName { .. })
        ));

        let mut l = valid();
        l.set("a.b", "1");
        l.set("a_b", "2");
        assert_eq!(
            l.validate(),
            Err(LabelError::DuplicateName { name: "a.b".into() })
        );

        assert_eq!(Labels::new().validate(), Err(LabelError::Empty));
        let l = Labels::try_from_pairs([("__name__", "x"), ("e", "")]).unwrap();
        assert_eq!(
            l.validate(),
            Err(LabelError::EmptyValue { name: "e".into() })
        );
        let l = Labels::try_from_pairs([("__name__", "x"), ("", "v")]).unwrap();
        assert_eq!(l.validate(), Err(LabelError::EmptyName));
    }

    #[test]
    fn configured_limits_apply_and_zero_turns_one_off() {
        let mut l = valid();
        l.set("k", "v".repeat(12));
        let tight = LabelLimits {
            max_label_names_per_series: 3,
            max_label_name_length: 12,
            max_label_value_length: 11,
        };
        assert_eq!(
            l.validate_with(&tight),
            Err(LabelError::ValueTooLong {
                name: "k".into(),
                len: 12,
                limit: 11
            })
        );
        l.set("k2", "v");
        assert_eq!(
            l.validate_with(&tight).unwrap_err().rule(),
            "max_label_names_per_series"
        );
        l.set("n".repeat(2000), "v");
        let off = LabelLimits {
            max_label_names_per_series: 0,
            max_label_name_length: 0,
            max_label_value_length: 0,
        };
        assert_eq!(l.validate_with(&off), Ok(()));
        assert_eq!(l.validate().unwrap_err().rule(), "label_name_too_long");
    }

    #[test]
    fn dotted_names_are_accepted() {
        let mut l = valid();
        l.set("service.version", "1.2");
        l.set(".leading", "1");
        assert_eq!(l.validate(), Ok(()));
    }

    /// A name built from the allowed alphabet, independent of the validator's code.
    fn name_strategy() -> impl Strategy<Value = String> {
        "[a-zA-Z_][a-zA-Z0-9_]{0,40}"
    }

    proptest! {
        #[test]
        fn valid_sets_pass(
            extra in proptest::collection::btree_map(name_strategy(), "[^\\x00]{1,60}", 0..28)
        ) {
            let mut l = valid();
            for (k, v) in &extra {
                if k != "__name__" { l.set(k.clone(), v.clone()); }
            }
            prop_assume!(l.len() <= 30);
            prop_assert_eq!(l.validate(), Ok(()));
        }

        #[test]
        fn a_name_outside_the_charset_is_rejected(
            prefix in "[a-z]{0,5}", bad in "[^a-zA-Z0-9_.]", suffix in "[a-z]{0,5}"
        ) {
            let name = format!("{prefix}{bad}{suffix}");
            let mut l = valid();
            l.set(name.clone(), "v");
            let e = l.validate().unwrap_err();
            prop_assert_eq!(e.rule(), "invalid_labels");
            prop_assert_eq!(e.label_name(), Some(name.as_str()));
        }

        #[test]
        fn a_leading_digit_is_rejected(d in "[0-9]", rest in "[a-z]{0,5}") {
            let mut l = valid();
            l.set(format!("{d}{rest}"), "v");
            prop_assert!(
                matches!(l.validate(), Err(LabelError::InvalidName { .. })),
                "leading digit must be rejected"
            );
        }

        #[test]
        fn value_length_limit_is_exact(len in 2040usize..2060) {
            let mut l = valid();
            l.set("k", "x".repeat(len));
            prop_assert_eq!(l.validate().is_ok(), len <= 2048);
        }

        #[test]
        fn name_count_limit_is_exact(n in 0usize..40) {
            let mut l = valid();
            for i in 0..n { l.set(format!("k{i}"), "v"); }
            prop_assert_eq!(l.validate().is_ok(), n + 2 <= 30);
        }

        #[test]
        fn merge_equals_repeated_set(
            a in proptest::collection::vec((name_strategy(), "[a-z]{1,3}"), 0..12),
            b in proptest::collection::btree_map(name_strategy(), "[a-z]{0,3}", 0..12),
        ) {
            let base = Labels::from_iter(a);
            let other = Labels::try_from_pairs(b).unwrap();
            let mut expected = base.clone();
            for l in &other { expected.set(l.name().to_owned(), l.value().to_owned()); }
            let mut merged = base.clone();
            merged.merge(&other);
            prop_assert_eq!(merged, expected);
        }

        #[test]
        fn from_iter_keeps_last_and_sorts(pairs in proptest::collection::vec((name_strategy(), "[a-z]{1,4}"), 0..20)) {
            let l = Labels::from_iter(pairs.clone());
            let mut expected = std::collections::BTreeMap::new();
            for (k, v) in pairs { expected.insert(k, v); }
            let got: Vec<_> = l.iter().map(|l| (l.name().to_owned(), l.value().to_owned())).collect();
            let want: Vec<_> = expected.into_iter().collect();
            prop_assert_eq!(got, want);
        }
    }
}
