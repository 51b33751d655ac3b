//! [`RelabelRules`]: compiled rules and how they are applied to a label set.

use md5::{Digest, Md5};
use pyro_core::Labels;
use regex::Regex;

use super::template::Template;

use super::*;

#[derive(Debug)]
pub(super) struct Compiled {
    pub(super) action: Action,
    pub(super) source_labels: Vec<String>,
    pub(super) separator: String,
    /// `None` for the default `(.*)`: every value matches, group 1 is the whole value.
    pub(super) regex: Option<Regex>,
    pub(super) target: Template,
    pub(super) replacement: Template,
    pub(super) target_label: String,
    pub(super) modulus: u64,
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

pub(super) fn compile(
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
    let invalid_target = |rule| RelabelError::InvalidTargetLabel {
        index,
        action,
        target_label: c.target_label.clone(),
        rule,
    };
    // Alloy's `Config.Validate` (grafana/alloy `internal/component/common/relabel/relabel.go`,
    // 7c2a3ac), which `discovery.relabel` runs: a `replace` target without `$` is checked as a
    // label name under the scheme in force, but one with `$` (a template) and every `labelmap`
    // replacement must match the legacy template pattern `relabelTarget`
    // (`^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`) whatever the scheme. Prometheus'
    // `model/relabel/relabel.go` (`Config.Validate`, `relabelTargetLegacy`) applies that pattern
    // only under legacy validation and accepts `-${1}` with UTF-8 names; we follow Alloy.
    match action {
        Action::Replace => {
            if c.target_label.contains('$') {
                if !is_legacy_name_template(&c.target_label) {
                    return Err(invalid_target(NameRule::LegacyTemplate));
                }
            } else if !names.is_valid(&c.target_label) {
                return Err(invalid_target(NameRule::name(names)));
            }
        }
        Action::HashMod
        | Action::Lowercase
        | Action::Uppercase
        | Action::KeepEqual
        | Action::DropEqual
            if !names.is_valid(&c.target_label) =>
        {
            return Err(invalid_target(NameRule::name(names)));
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
    // `labelmap`: the legacy template pattern under every scheme (Alloy's rule, above).
    if action == Action::LabelMap && !is_legacy_name_template(&c.replacement) {
        return Err(RelabelError::InvalidReplacement {
            index,
            replacement: c.replacement.clone(),
            rule: NameRule::LegacyTemplate,
        });
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
pub(super) fn set_mapped(labels: &mut Labels, name: &str, value: &str) {
    if !name.is_empty() && labels.get(name) != Some(value) {
        labels.set(name, value);
    }
}
