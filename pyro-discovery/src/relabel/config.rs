//! A rule as written ([`RelabelConfig`], [`Action`]) and how label names are validated.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// Alloy 1.11. Templates (a `replace` target holding `$`, a `labelmap` replacement) must
    /// still match the legacy template pattern, as in Alloy ([`NameRule::LegacyTemplate`]).
    ///
    /// [`NameRule::LegacyTemplate`]: super::NameRule::LegacyTemplate
    Utf8,
}

impl NameValidation {
    /// Whether `name` is a valid label name under this rule.
    pub fn is_valid(self, name: &str) -> bool {
        match self {
            Self::Legacy => pyro_core::labels::is_legacy_label_name(name),
            Self::Utf8 => !name.is_empty(),
        }
    }
}

/// `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$` (Go, ASCII `\w`): a label name that may contain
/// `$1`/`${name}` references. Written out by hand to avoid a second regex engine.
pub(super) fn is_legacy_name_template(s: &str) -> bool {
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
