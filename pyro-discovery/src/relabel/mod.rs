//! `discovery.relabel`: Prometheus relabelling rules on any [`Labels`] — discovered targets and
//! profile labels alike.
//!
//! A [`RelabelConfig`] is plain data with Alloy's field names and defaults (serde-deserializable
//! from the same shape as an Alloy `rule` block). [`RelabelRules::new`] validates and compiles
//! a list of them, rejecting invalid rules with a [`RelabelError`] that names the rule index and
//! the problem. [`RelabelRules::process`] then applies them in order, stopping at the first rule
//! that drops the label set.
//!
//! Semantics follow the Prometheus documentation of `<relabel_config>`
//! (<https://prometheus.io/docs/prometheus/latest/configuration/configuration/#relabel_config>)
//! and Alloy's `internal/component/common/relabel/relabel.go`:
//!
//! - `val` is the values of `source_labels` (missing labels count as `""`) joined by `separator`.
//! - `regex` is anchored at both ends and `.` matches a newline: it is compiled as
//!   `^(?s:REGEX)$` with Go (RE2) syntax; see below for how Go syntax is kept exact.
//! - `replace`: if `regex` matches `val`, set the label named by expanding `target_label` to the
//!   expansion of `replacement`; an empty result deletes the label, an invalid label name leaves
//!   the set unchanged; no match changes nothing.
//! - `keep` / `drop`: keep (drop) the set when `regex` matches (does not match) … `val`.
//! - `keepequal` / `dropequal`: keep (drop) the set when `val` equals the `target_label` value.
//! - `hashmod`: set `target_label` to `BigEndianU64(md5(val)[8..16]) % modulus`.
//! - `labelmap`: for each label whose *name* matches `regex`, add a label named by expanding
//!   `replacement` with the same value (the original stays).
//! - `labeldrop` / `labelkeep`: remove labels whose name matches (does not match) `regex`.
//! - `lowercase` / `uppercase`: set `target_label` to `val` lower- or upper-cased (character by
//!   character, as Go does: `ß` stays `ß`).
//!
//! `labelmap`, `labeldrop` and `labelkeep` iterate over a snapshot of the labels taken before
//! the rule runs, so labels a rule adds are not seen by the same rule. Setting a label to `""`
//! deletes it.
//!
//! Go and Rust regular expressions differ silently in places (`\d` and `\w` are ASCII in Go,
//! `a{,3}` is a literal in Go, `[[]` is a class holding `[`…); patterns are translated from Go
//! syntax so that they match exactly what Alloy matches, and patterns Go refuses are refused.
//!
//! Label-name checks (for `target_label`, and for the names `replace` produces) follow a
//! [`NameValidation`] setting: [`NameValidation::Legacy`] (`[a-zA-Z_][a-zA-Z0-9_]*`, what
//! `pyroscope.relabel` and Alloy ≤ 1.10 enforce; the default) or [`NameValidation::Utf8`] (any
//! non-empty name, what `discovery.relabel` accepts since Alloy 1.11).
//!
//! ```
//! use pyro_core::Labels;
//! use pyro_discovery::relabel::{Action, RelabelConfig, RelabelRules};
//!
//! let rules = RelabelRules::new(&[
//!     RelabelConfig {
//!         source_labels: vec!["__meta_process_exe".into()],
//!         regex: ".*/([^/]+)".into(),
//!         target_label: "service_name".into(),
//!         ..RelabelConfig::default()
//!     },
//!     RelabelConfig {
//!         source_labels: vec!["service_name".into()],
//!         regex: "sshd|bash".into(),
//!         action: Action::Drop,
//!         ..RelabelConfig::default()
//!     },
//! ])
//! .unwrap();
//! let labels = Labels::from_iter([("__meta_process_exe", "/usr/bin/nginx")]);
//! let out = rules.apply(labels).unwrap();
//! assert_eq!(out.get("service_name"), Some("nginx"));
//! assert!(rules.apply(Labels::from_iter([("__meta_process_exe", "/bin/bash")])).is_none());
//! ```

mod discoverer;
mod goregex;
mod receiver;
mod template;

use std::fmt;

use md5::{Digest, Md5};
use pyro_core::Labels;
use regex::Regex;
use serde::{Deserialize, Serialize};

pub use discoverer::{RelabelDiscoverer, relabel_targets};
pub use receiver::{RelabelMetrics, RelabelReceiver};
use template::Template;

/// The default `separator`.
pub const DEFAULT_SEPARATOR: &str = ";";
/// The default `regex`.
pub const DEFAULT_REGEX: &str = "(.*)";
/// The default `replacement`.
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// What a rule does. Serialized in lower case, as Alloy spells it (`labelmap`, `keepequal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Action {
    /// Set `target_label` to the expanded `replacement` when `regex` matches.
    #[default]
    Replace,
    /// Drop the label set unless `regex` matches.
    Keep,
    /// Drop the label set when `regex` matches.
    Drop,
    /// Keep the label set only if `val` equals the value of `target_label`.
    KeepEqual,
    /// Drop the label set if `val` equals the value of `target_label`.
    DropEqual,
    /// Set `target_label` to the md5 of `val` modulo `modulus`.
    HashMod,
    /// Copy labels whose name matches `regex` to the expanded `replacement` name.
    LabelMap,
    /// Remove labels whose name matches `regex`.
    LabelDrop,
    /// Remove labels whose name does not match `regex`.
    LabelKeep,
    /// Set `target_label` to `val` in lower case.
    Lowercase,
    /// Set `target_label` to `val` in upper case.
    Uppercase,
}

impl Action {
    /// The name as Alloy and Prometheus spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One relabelling rule as plain data: Alloy's `rule` block, with its field names and defaults.
///
/// Missing fields take their defaults when deserializing, so
/// `{"source_labels": ["a"], "target_label": "b"}` is a `replace` of `b` with `a`'s value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined into `val`.
    pub source_labels: Vec<String>,
    /// Joins the source values (default `;`).
    pub separator: String,
    /// Go (RE2) regular expression, anchored at both ends (default `(.*)`).
    pub regex: String,
    /// Modulus for `hashmod` (default 0, which `hashmod` refuses).
    pub modulus: u64,
    /// The label a rule writes (`replace`, `hashmod`, `lowercase`, `uppercase`) or compares to
    /// (`keepequal`, `dropequal`). For `replace` it may hold `$1`-style references.
    pub target_label: String,
    /// Replacement template for `replace` and `labelmap` (default `$1`).
    pub replacement: String,
    /// What the rule does (default `replace`).
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        Self {
            source_labels: Vec::new(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            regex: DEFAULT_REGEX.to_owned(),
            modulus: 0,
            target_label: String::new(),
            replacement: DEFAULT_REPLACEMENT.to_owned(),
            action: Action::Replace,
        }
    }
}

/// Which label names a rule may write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameValidation {
    /// `[a-zA-Z_][a-zA-Z0-9_]*`: Prometheus' legacy rule, enforced by `pyroscope.relabel` and by
    /// Alloy ≤ 1.10's `discovery.relabel`. The default.
    #[default]
    Legacy,
    /// Any non-empty name (`service.name` included), as `discovery.relabel` accepts since
    /// Alloy 1.11.
    Utf8,
}

impl NameValidation {
    /// Whether `name` is a valid label name under this rule.
    pub fn is_valid(self, name: &str) -> bool {
        match self {
            Self::Legacy => is_legacy_name(name),
            Self::Utf8 => !name.is_empty(),
        }
    }
}

fn is_legacy_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$` (Go, ASCII `\w`): a label name that may contain
/// `$1`/`${name}` references. Written out by hand to avoid a second regex engine.
fn is_legacy_name_template(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    // The language is: a sequence of items, each `[a-zA-Z_]`, `${\w+}`, `$\w+` or a `\w`
    // continuing a previous item; the first item may not be a bare `\w` (digit).
    let mut started = false;
    while i < b.len() {
        match b[i] {
            b'$' => {
                if b.get(i + 1) == Some(&b'{') {
                    let n = b[i + 2..].iter().take_while(|&&c| word(c)).count();
                    if n == 0 || b.get(i + 2 + n) != Some(&b'}') {
                        return false;
                    }
                    i += 3 + n;
                } else {
                    let n = b[i + 1..].iter().take_while(|&&c| word(c)).count();
                    if n == 0 {
                        return false;
                    }
                    i += 1 + n;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => i += 1,
            c if c.is_ascii_digit() && started => i += 1,
            _ => return false,
        }
        started = true;
    }
    true
}

/// A rule that cannot be compiled. Every variant names the rule's index in the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelabelError {
    /// The regex is not valid Go (RE2) syntax, or cannot be compiled.
    #[error("relabel rule {index}: invalid regex {regex:?}: {reason}")]
    InvalidRegex {
        /// Index of the rule.
        index: usize,
        /// The pattern as written.
        regex: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The action needs a `target_label`.
    #[error("relabel rule {index}: action {action} requires a target_label")]
    MissingTargetLabel {
        /// Index of the rule.
        index: usize,
        /// The action.
        action: Action,
    },
    /// `target_label` is not a valid label name (or template, for `replace`).
    #[error(
        "relabel rule {index}: {target_label:?} is an invalid target_label for action {action}"
    )]
    InvalidTargetLabel {
        /// Index of the rule.
        index: usize,
        /// The action.
        action: Action,
        /// The offending value.
        target_label: String,
    },
    /// `hashmod` with a zero modulus.
    #[error("relabel rule {index}: action hashmod requires a non-zero modulus")]
    ZeroModulus {
        /// Index of the rule.
        index: usize,
    },
    /// `labelmap`'s replacement is not a label-name template.
    #[error("relabel rule {index}: {replacement:?} is an invalid replacement for action labelmap")]
    InvalidReplacement {
        /// Index of the rule.
        index: usize,
        /// The offending value.
        replacement: String,
    },
    /// A field the action does not use was set to a non-default value.
    #[error("relabel rule {index}: action {action} does not accept field {field} (only {allowed})")]
    FieldNotAllowed {
        /// Index of the rule.
        index: usize,
        /// The action.
        action: Action,
        /// The field that was set.
        field: &'static str,
        /// The fields the action accepts.
        allowed: &'static str,
    },
}

#[derive(Debug)]
struct Compiled {
    action: Action,
    source_labels: Vec<String>,
    separator: String,
    /// `None` for the default `(.*)`: every value matches, group 1 is the whole value.
    regex: Option<Regex>,
    target: Template,
    replacement: Template,
    target_label: String,
    modulus: u64,
}

/// Compiled relabelling rules, ready to apply to any number of label sets concurrently.
#[derive(Debug)]
pub struct RelabelRules {
    rules: Vec<Compiled>,
    names: NameValidation,
}

impl RelabelRules {
    /// Validates and compiles `configs` with [`NameValidation::Legacy`].
    pub fn new(configs: &[RelabelConfig]) -> Result<Self, RelabelError> {
        Self::with_validation(configs, NameValidation::Legacy)
    }

    /// Validates and compiles `configs`, checking label names with `names`.
    pub fn with_validation(
        configs: &[RelabelConfig],
        names: NameValidation,
    ) -> Result<Self, RelabelError> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(index, c)| compile(index, c, names))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules, names })
    }

    /// No rules: every label set passes unchanged.
    pub fn empty() -> Self {
        Self {
            rules: Vec::new(),
            names: NameValidation::Legacy,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules to `labels` in place. Returns `false` when a rule dropped the set (the
    /// labels are then left as they were when the dropping rule ran).
    pub fn process(&self, labels: &mut Labels) -> bool {
        let mut val = String::new();
        let mut scratch = String::new();
        self.rules
            .iter()
            .all(|r| r.apply(labels, self.names, &mut val, &mut scratch))
    }

    /// Applies the rules to `labels`: the result, or `None` when a rule dropped them.
    pub fn apply(&self, mut labels: Labels) -> Option<Labels> {
        self.process(&mut labels).then_some(labels)
    }
}

impl Default for RelabelRules {
    fn default() -> Self {
        Self::empty()
    }
}

fn compile(
    index: usize,
    c: &RelabelConfig,
    names: NameValidation,
) -> Result<Compiled, RelabelError> {
    let action = c.action;
    let needs_target = matches!(
        action,
        Action::Replace
            | Action::HashMod
            | Action::Lowercase
            | Action::Uppercase
            | Action::KeepEqual
            | Action::DropEqual
    );
    if needs_target && c.target_label.is_empty() {
        return Err(RelabelError::MissingTargetLabel { index, action });
    }
    let invalid_target = || RelabelError::InvalidTargetLabel {
        index,
        action,
        target_label: c.target_label.clone(),
    };
    match action {
        Action::Replace => {
            let ok = match names {
                NameValidation::Legacy => is_legacy_name_template(&c.target_label),
                NameValidation::Utf8 => true,
            };
            if !ok {
                return Err(invalid_target());
            }
        }
        Action::HashMod
        | Action::Lowercase
        | Action::Uppercase
        | Action::KeepEqual
        | Action::DropEqual
            if !names.is_valid(&c.target_label) =>
        {
            return Err(invalid_target());
        }
        _ => {}
    }
    if action == Action::HashMod && c.modulus == 0 {
        return Err(RelabelError::ZeroModulus { index });
    }
    let not_allowed = |field, allowed| RelabelError::FieldNotAllowed {
        index,
        action,
        field,
        allowed,
    };
    // Fields an action ignores must keep their defaults: (field, still default?).
    let defaults = [
        ("source_labels", c.source_labels.is_empty()),
        ("target_label", c.target_label.is_empty()),
        ("regex", c.regex == DEFAULT_REGEX),
        ("modulus", c.modulus == 0),
        ("separator", c.separator == DEFAULT_SEPARATOR),
        ("replacement", c.replacement == DEFAULT_REPLACEMENT),
    ];
    let must_be_default: &[&str] = match action {
        Action::Lowercase | Action::Uppercase => &["replacement"],
        Action::KeepEqual | Action::DropEqual => &["regex", "modulus", "separator", "replacement"],
        Action::LabelDrop | Action::LabelKeep => &[
            "source_labels",
            "target_label",
            "modulus",
            "separator",
            "replacement",
        ],
        _ => &[],
    };
    let allowed = match action {
        Action::Lowercase | Action::Uppercase => "source_labels, separator, target_label",
        Action::KeepEqual | Action::DropEqual => "source_labels, target_label",
        _ => "regex",
    };
    if let Some((field, _)) = defaults
        .iter()
        .find(|(field, default)| !default && must_be_default.contains(field))
    {
        return Err(not_allowed(*field, allowed));
    }
    if action == Action::LabelMap {
        let ok = match names {
            NameValidation::Legacy => is_legacy_name_template(&c.replacement),
            NameValidation::Utf8 => !c.replacement.is_empty(),
        };
        if !ok {
            return Err(RelabelError::InvalidReplacement {
                index,
                replacement: c.replacement.clone(),
            });
        }
    }

    let invalid_regex = |reason: String| RelabelError::InvalidRegex {
        index,
        regex: c.regex.clone(),
        reason,
    };
    let translated = goregex::translate(&c.regex).map_err(invalid_regex)?;
    let regex = if c.regex == DEFAULT_REGEX {
        None
    } else {
        let anchored = format!("^(?s:{})$", translated.pattern);
        let re = regex::RegexBuilder::new(&anchored)
            .build()
            .map_err(|e| invalid_regex(e.to_string()))?;
        Some(re)
    };
    Ok(Compiled {
        action,
        source_labels: c.source_labels.clone(),
        separator: c.separator.clone(),
        regex,
        target: Template::parse(&c.target_label, &translated.names),
        replacement: Template::parse(&c.replacement, &translated.names),
        target_label: c.target_label.clone(),
        modulus: c.modulus,
    })
}

impl Compiled {
    fn is_match(&self, s: &str) -> bool {
        self.regex.as_ref().is_none_or(|r| r.is_match(s))
    }

    fn source_value<'a>(&self, labels: &'a Labels, buf: &'a mut String) -> &'a str {
        if let [one] = self.source_labels.as_slice() {
            return labels.get(one).unwrap_or("");
        }
        buf.clear();
        for (i, name) in self.source_labels.iter().enumerate() {
            if i > 0 {
                buf.push_str(&self.separator);
            }
            buf.push_str(labels.get(name).unwrap_or(""));
        }
        buf
    }

    /// One rule; `false` drops the set.
    fn apply(
        &self,
        labels: &mut Labels,
        names: NameValidation,
        buf: &mut String,
        scratch: &mut String,
    ) -> bool {
        match self.action {
            Action::Keep => self.is_match(self.source_value(labels, buf)),
            Action::Drop => !self.is_match(self.source_value(labels, buf)),
            Action::KeepEqual => {
                let val = self.source_value(labels, buf);
                labels.get(&self.target_label).unwrap_or("") == val
            }
            Action::DropEqual => {
                let val = self.source_value(labels, buf);
                labels.get(&self.target_label).unwrap_or("") != val
            }
            Action::Replace => {
                let val = self.source_value(labels, buf);
                // A target without `$` is a literal, checked when the rule was compiled.
                let literal = !self.target_label.contains('$');
                let mut target = String::new();
                scratch.clear();
                match &self.regex {
                    None => {
                        if !literal {
                            self.target.expand_whole(val, &mut target);
                        }
                        self.replacement.expand_whole(val, scratch);
                    }
                    Some(re) => {
                        let Some(caps) = re.captures(val) else {
                            return true;
                        };
                        if !literal {
                            self.target.expand_into(&caps, &mut target);
                        }
                        self.replacement.expand_into(&caps, scratch);
                    }
                }
                let target = if literal {
                    self.target_label.as_str()
                } else {
                    target.as_str()
                };
                if !names.is_valid(target) {
                    return true;
                }
                if scratch.is_empty() {
                    labels.remove(target);
                } else if labels.get(target) != Some(scratch.as_str()) {
                    labels.set(target, scratch.as_str());
                }
                true
            }
            Action::Lowercase | Action::Uppercase => {
                let val = self.source_value(labels, buf);
                let cased = if self.action == Action::Lowercase {
                    go_to_lower(val)
                } else {
                    go_to_upper(val)
                };
                labels.set(self.target_label.as_str(), cased);
                true
            }
            Action::HashMod => {
                let val = self.source_value(labels, buf);
                let digest = Md5::digest(val.as_bytes());
                let mut tail = [0u8; 8];
                tail.copy_from_slice(&digest[8..16]);
                let m = u64::from_be_bytes(tail) % self.modulus;
                labels.set(self.target_label.as_str(), m.to_string());
                true
            }
            Action::LabelMap => {
                let snapshot = labels.clone();
                for label in snapshot.iter() {
                    let (name, value) = (label.name(), label.value());
                    let Some(re) = &self.regex else {
                        // `(.*)`: the name maps to the replacement with $1 = name.
                        scratch.clear();
                        self.replacement.expand_whole(name, scratch);
                        set_mapped(labels, scratch, value);
                        continue;
                    };
                    if let Some(caps) = re.captures(name) {
                        scratch.clear();
                        self.replacement.expand_into(&caps, scratch);
                        set_mapped(labels, scratch, value);
                    }
                }
                true
            }
            Action::LabelDrop => {
                labels.retain(|l| !self.is_match(l.name()));
                true
            }
            Action::LabelKeep => {
                labels.retain(|l| self.is_match(l.name()));
                true
            }
        }
    }
}

/// `labelmap` writes: an empty name (a template that expanded to nothing) is skipped rather than
/// producing a label without a name.
fn set_mapped(labels: &mut Labels, name: &str, value: &str) {
    if !name.is_empty() && labels.get(name) != Some(value) {
        labels.set(name, value);
    }
}

/// Go's `strings.ToLower`: one character to one character (`unicode.ToLower`), no context.
pub fn go_to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            let mut l = c.to_lowercase();
            match (l.next(), l.next()) {
                (Some(one), None) => one,
                // U+0130 LATIN CAPITAL LETTER I WITH DOT ABOVE: simple mapping is `i`.
                _ if c == '\u{130}' => 'i',
                _ => c,
            }
        })
        .collect()
}

/// Go's `strings.ToUpper`: one character to one character (`unicode.ToUpper`): characters whose
/// full upper case is longer keep their simple mapping (`ß` stays `ß`).
pub fn go_to_upper(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    s.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(one), None) => one,
                _ => simple_upper_of_special(c).unwrap_or(c),
            }
        })
        .collect()
}

/// Simple upper-case mappings of the characters whose full mapping has several characters but
/// whose simple mapping is a different single character (Greek with ypogegrammeni).
fn simple_upper_of_special(c: char) -> Option<char> {
    let u = c as u32;
    let mapped = match u {
        0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => u + 8,
        0x1FB3 => 0x1FBC,
        0x1FC3 => 0x1FCC,
        0x1FF3 => 0x1FFC,
        _ => return None,
    };
    char::from_u32(mapped)
}

#[cfg(test)]
mod tests;
