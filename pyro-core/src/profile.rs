//! [`Profile`]: one pprof payload and the labels of the series it belongs to.

use bytes::Bytes;

use crate::labels::{LabelError, Labels, names};

/// One profile on its way through the pipeline: the labels of its series and the pprof bytes
/// (gzip-compressed or not, as the producer sent them). Cloning is cheap: the payload is a
/// reference-counted [`Bytes`] and the labels copy themselves only when changed.
///
/// ```
/// use bytes::Bytes;
/// use pyro_core::{Labels, Profile};
///
/// let p = Profile::new(
///     Labels::from_iter([("__name__", "process_cpu"), ("service_name", "api")]),
///     Bytes::from_static(b"\x1f\x8b..."),
/// );
/// assert_eq!(p.service_name(), Some("api"));
/// assert!(p.labels.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Labels of the series.
    pub labels: Labels,
    /// The pprof payload (`perftools.profiles.Profile`), gzip-compressed or plain.
    pub raw: Bytes,
    /// An optional profile id (Pyroscope's `RawSample.ID`).
    pub id: Option<String>,
}

impl Profile {
    /// A profile without an id.
    pub fn new(labels: Labels, raw: impl Into<Bytes>) -> Self {
        Self {
            labels,
            raw: raw.into(),
            id: None,
        }
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The `service_name` label.
    pub fn service_name(&self) -> Option<&str> {
        self.labels.get(names::SERVICE_NAME)
    }

    /// The `__name__` label (the profile type, e.g. `process_cpu`).
    pub fn profile_type(&self) -> Option<&str> {
        self.labels.get(names::METRIC_NAME)
    }

    /// Whether the payload is gzip-compressed (starts with `1f 8b`).
    pub fn is_gzipped(&self) -> bool {
        crate::pprof::is_gzip(&self.raw)
    }

    /// Checks the labels against Pyroscope's rules ([`Labels::validate`]).
    pub fn validate_labels(&self) -> Result<(), LabelError> {
        self.labels.validate()
    }
}
