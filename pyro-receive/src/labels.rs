//! How the labels of received profiles are made: the Push series rules and the `/ingest`
//! `name=app{k=v,…}` grammar.
//!
//! Both endpoints end the same way: reserved labels (`__`-prefixed) are dropped except
//! `__name__` and `__delta__` (what Alloy's `pyroscope.write` does before sending, so nothing
//! downstream sees `__session_id__` or discovery metadata), empty values are treated as absent,
//! and the set is checked with [`Labels::validate`].
//!
//! **Alloy's `ensureServiceName` quirk is not copied.** Alloy's `receive_http` sets
//! `service_name = __name__` on a Push series without `service_name`, and otherwise adds
//! `app_name = __name__`. On Push, `__name__` is the profile type (`process_cpu`), so a series
//! forwarded by another Alloy gains `app_name="process_cpu"` and a series without a service is
//! filed under a service called `process_cpu`. Here a Push series keeps its labels; one without
//! `service_name` gets `service_name="unknown_service"`, as Pyroscope's distributor would do.
//! On `/ingest` the service comes from the application name, as Pyroscope's own `/ingest` does
//! (with `app_name` holding it when the braces name a `service_name`).

use pyro_core::labels::{LabelLimits, names};
use pyro_core::{LabelError, Labels};

/// The `service_name` a Push series without one gets (Pyroscope's distributor uses the same).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The labels of a Push series from its pairs: empty values dropped, duplicates refused,
/// reserved labels dropped (except `__name__`, `__delta__`), `service_name` defaulted to
/// [`UNKNOWN_SERVICE`], then validated.
pub fn push_series_labels(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<Labels, LabelError> {
    push_series_labels_with(pairs, &LabelLimits::default())
}

/// [`push_series_labels`] with the count and length limits a host configured
/// ([`pyro_core::limits::IngestLimits::labels`]).
pub fn push_series_labels_with(
    pairs: impl IntoIterator<Item = (String, String)>,
    limits: &LabelLimits,
) -> Result<Labels, LabelError> {
    let mut labels = Labels::try_from_pairs(pairs.into_iter().filter(|(_, v)| !v.is_empty()))?;
    labels.drop_reserved();
    labels.set_if_absent(names::SERVICE_NAME, UNKNOWN_SERVICE);
    labels.validate_with(limits)?;
    Ok(labels)
}

/// A parsed `/ingest` application name: `APP{k=v,…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName {
    /// The application name before the braces (trimmed), e.g. `my.app.cpu`.
    pub app: String,
    /// The labels in braces, in order (reserved `__` keys already removed).
    pub labels: Vec<(String, String)>,
}

/// A `name` parameter that breaks the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The application name is empty.
    #[error("application name is empty")]
    EmptyApp,
    /// The application name has a character outside `[A-Za-z0-9_./-]`.
    #[error("application name {app:?} has invalid character {ch:?}: allowed are [A-Za-z0-9_./-]")]
    InvalidApp {
        /// The name.
        app: String,
        /// The first bad character.
        ch: char,
    },
    /// The `{` is never closed.
    #[error("label list of {app:?} has no closing brace")]
    Unclosed {
        /// The application name.
        app: String,
    },
    /// A `k=v` pair without `=` or with an empty key.
    #[error("label pair {pair:?} is not key=value")]
    BadPair {
        /// The pair as sent.
        pair: String,
    },
    /// A key with a character outside `[A-Za-z0-9_.]`.
    #[error("label key {key:?} is invalid: allowed are [A-Za-z0-9_.]")]
    InvalidKey {
        /// The key.
        key: String,
    },
}

/// Parses `APP[{k=v,…}]` with Pyroscope's grammar (`api/model/labelset`): the app is trimmed
/// and must match `[A-Za-z0-9_./-]+`; keys are trimmed and must match `[A-Za-z0-9_.]+`; values
/// are trimmed and may hold anything but `,` and `}`; the last duplicate wins; text after `}`
/// is ignored. Keys starting with `__` are dropped.
///
/// ```
/// use pyro_receive::labels::parse_app_name;
/// let n = parse_app_name("my.app.cpu{env=staging, region = us-west-1}").unwrap();
/// assert_eq!(n.app, "my.app.cpu");
/// assert_eq!(n.labels, [("env".into(), "staging".into()), ("region".into(), "us-west-1".into())]);
/// ```
pub fn parse_app_name(name: &str) -> Result<AppName, NameError> {
    let (app, rest) = match name.find('{') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    let app = app.trim();
    if app.is_empty() {
        return Err(NameError::EmptyApp);
    }
    if let Some(ch) = app
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')))
    {
        return Err(NameError::InvalidApp {
            app: app.to_owned(),
            ch,
        });
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(rest) = rest {
        let Some(end) = rest.find('}') else {
            return Err(NameError::Unclosed {
                app: app.to_owned(),
            });
        };
        for pair in rest[..end].split(',') {
            if pair.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = pair.split_once('=') else {
                return Err(NameError::BadPair {
                    pair: pair.to_owned(),
                });
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(NameError::BadPair {
                    pair: pair.to_owned(),
                });
            }
            if !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(NameError::InvalidKey { key: k.to_owned() });
            }
            if k.starts_with(names::RESERVED_PREFIX) {
                continue;
            }
            labels.retain(|(name, _)| name != k);
            labels.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(AppName {
        app: app.to_owned(),
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn push_labels() {
        let l = push_series_labels(pairs(&[
            ("__name__", "process_cpu"),
            ("service_name", "api"),
            ("__session_id__", "abc"),
            ("__delta__", "false"),
            ("empty", ""),
        ]))
        .unwrap();
        assert_eq!(
            l.to_string(),
            Labels::from_iter([
                ("__delta__", "false"),
                ("__name__", "process_cpu"),
                ("service_name", "api")
            ])
            .to_string()
        );
        // No app_name is invented (Alloy's ensureServiceName would add app_name=process_cpu).
        assert!(!l.contains("app_name"));

        let l = push_series_labels(pairs(&[("__name__", "process_cpu")])).unwrap();
        assert_eq!(l.get("service_name"), Some(UNKNOWN_SERVICE));

        assert_eq!(
            push_series_labels(pairs(&[("__name__", "a"), ("x", "1"), ("x", "2")])),
            Err(LabelError::DuplicateName { name: "x".into() })
        );
        assert_eq!(
            push_series_labels(pairs(&[("service_name", "a")])),
            Err(LabelError::MissingMetricName)
        );
    }

    #[test]
    fn app_names() {
        let n = parse_app_name(" app ").unwrap();
        assert_eq!((n.app.as_str(), n.labels.len()), ("app", 0));
        let n = parse_app_name("a.b{}").unwrap();
        assert!(n.labels.is_empty());
        let n = parse_app_name("a{x=1,x=2,__session_id__=9,y=a b}trailing").unwrap();
        assert_eq!(n.labels, pairs(&[("x", "2"), ("y", "a b")]));
        assert_eq!(parse_app_name("{x=1}"), Err(NameError::EmptyApp));
        assert!(matches!(
            parse_app_name("a b"),
            Err(NameError::InvalidApp { ch: ' ', .. })
        ));
        assert!(matches!(
            parse_app_name("a{x=1"),
            Err(NameError::Unclosed { .. })
        ));
        assert!(matches!(
            parse_app_name("a{x}"),
            Err(NameError::BadPair { .. })
        ));
        assert!(matches!(
            parse_app_name("a{=1}"),
            Err(NameError::BadPair { .. })
        ));
        assert!(matches!(
            parse_app_name("a{x-y=1}"),
            Err(NameError::InvalidKey { .. })
        ));
    }
}
