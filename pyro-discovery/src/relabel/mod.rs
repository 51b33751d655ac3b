//! `discovery.relabel`: Prometheus relabelling rules on any [`Labels`](pyro_core::Labels) — discovered targets and
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
//! non-empty name, what `discovery.relabel` accepts since Alloy 1.11). Templates are checked
//! more strictly, as Alloy checks them: a `target_label` holding `$` and every `labelmap`
//! `replacement` must match the legacy template pattern
//! `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$` under either setting, so `-${1}` or
//! `meta.$1` are refused with [`NameRule::LegacyTemplate`] even with UTF-8 names, while a
//! literal target `service.name` is accepted with them.
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

mod case;
mod config;
mod discoverer;
mod error;
mod goregex;
mod receiver;
mod rules;
mod template;

pub use case::{go_to_lower, go_to_upper};
pub use config::*;
pub use discoverer::{RelabelDiscoverer, relabel_targets};
pub use error::{NameRule, RelabelError};
pub use receiver::{RelabelMetrics, RelabelReceiver};
pub use rules::RelabelRules;
#[allow(
    unused_imports,
    reason = "the submodules and tests reach each other's items through here"
)]
use rules::*;

#[cfg(test)]
mod tests;
