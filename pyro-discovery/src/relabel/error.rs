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
