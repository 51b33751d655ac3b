//! [`RelabelError`]: a rule that cannot be compiled.

use super::*;

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
        "relabel rule {index}: {target_label:?} is an invalid target_label for action {action}: it must be {rule}"
    )]
    InvalidTargetLabel {
        /// Index of the rule.
        index: usize,
        /// The action.
        action: Action,
        /// The offending value.
        target_label: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// `hashmod` with a zero modulus.
    #[error("relabel rule {index}: action hashmod requires a non-zero modulus")]
    ZeroModulus {
        /// Index of the rule.
        index: usize,
    },
    /// `labelmap`'s replacement is not a label-name template.
    #[error(
        "relabel rule {index}: {replacement:?} is an invalid replacement for action labelmap: it must be {rule}"
    )]
    InvalidReplacement {
        /// Index of the rule.
        index: usize,
        /// The offending value.
        replacement: String,
        /// The rule it breaks ([`NameRule::LegacyTemplate`], whatever the name validation).
        rule: NameRule,
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

/// The rule a `target_label` or `labelmap` replacement was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameRule {
    /// A label name under [`NameValidation::Legacy`]: `[a-zA-Z_][a-zA-Z0-9_]*`.
    LegacyName,
    /// A label name under [`NameValidation::Utf8`]: any non-empty name.
    Utf8Name,
    /// Prometheus' and Alloy's label-name template pattern
    /// `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`, which a `replace` target holding `$` and
    /// every `labelmap` replacement must match whatever the name validation (Alloy's rule).
    LegacyTemplate,
}

impl NameRule {
    /// The rule for a label name under `names`.
    pub(super) fn name(names: NameValidation) -> Self {
        match names {
            NameValidation::Legacy => Self::LegacyName,
            NameValidation::Utf8 => Self::Utf8Name,
        }
    }
}

impl std::fmt::Display for NameRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LegacyName => "a legacy label name [a-zA-Z_][a-zA-Z0-9_]*",
            Self::Utf8Name => "a non-empty label name",
            Self::LegacyTemplate => {
                r"a template matching ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$ (required of templates under every name validation)"
            }
        })
    }
}
