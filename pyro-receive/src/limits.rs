//! Pyroscope's ingest limits on received profiles ([`pyro_core::limits`]): what a request
//! carried once they were applied ([`Checked`]), and the answer a client gets for the profiles
//! they refused.
//!
//! **Neighbours are kept, as in Pyroscope.** Pyroscope's distributor pushes every series of a
//! request on its own (`PushBatch` runs `pushSeries` for each, collecting the errors): a
//! profile that breaks a limit is discarded, the others of the same request are stored, and the
//! request is answered with the (first) validation error, `invalid_argument` (400). This
//! receiver does the same: the accepted profiles are forwarded, then the request is answered
//! 400 naming the rule, where the profile was and how many others were accepted. A client that
//! retries a 400 would duplicate them — but no Connect client or SDK retries `invalid_argument`.
//!
//! What still refuses a whole request without forwarding anything: a body that is not a
//! `PushRequest`, a `raw_profile` that is not a pprof, and anything wrong with the request
//! itself (size, encoding, content type).

pub use pyro_core::limits::{IngestLimits, LimitError, Rule};

use crate::error::RequestError;
use pyro_core::Profile;

/// A profile the limits refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Where it was in the request: `series[0].samples[1]` (Push) or `body` (`/ingest`).
    pub at: String,
    /// The rule it broke.
    pub error: LimitError,
}

/// The profiles of one request after the limits: those to forward and those refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// The profiles that passed, in request order.
    pub profiles: Vec<Profile>,
    /// The profiles refused, in request order.
    pub refused: Vec<Refused>,
}

impl Checked {
    /// The answer for the refused profiles, if any: `invalid_argument` (400) with the first
    /// refusal's rule and place, how many more were refused and how many were accepted.
    pub fn refusal(&self) -> Option<RequestError> {
        let first = self.refused.first()?;
        let mut message = format!("{}: {}", first.at, first.error);
        let more = self.refused.len() - 1;
        if more > 0 {
            message.push_str(&format!(
                "; {more} more profiles of this request were refused"
            ));
        }
        if !self.profiles.is_empty() {
            message.push_str(&format!(
                "; the {} other profiles of this request were accepted",
                self.profiles.len()
            ));
        }
        Some(RequestError::invalid(message))
    }

    /// Everything passed: the profiles; else the refusal (what a caller that wants all or
    /// nothing uses).
    pub fn all_or_nothing(self) -> Result<Vec<Profile>, RequestError> {
        match self.refusal() {
            Some(e) => Err(e),
            None => Ok(self.profiles),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_core::{LabelError, Labels};

    #[test]
    fn refusal_names_rule_place_and_neighbours() {
        let refused = |at: &str| Refused {
            at: at.into(),
            error: LimitError::Labels {
                labels: "{}".into(),
                source: LabelError::TooManyNames {
                    count: 31,
                    limit: 30,
                },
            },
        };
        let c = Checked {
            profiles: vec![Profile::new(Labels::new(), Vec::new())],
            refused: vec![
                refused("series[1].samples[0]"),
                refused("series[2].samples[0]"),
            ],
        };
        let e = c.refusal().unwrap();
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.message.starts_with("series[1].samples[0]: "), "{e}");
        assert!(e.message.contains("max_label_names_per_series"), "{e}");
        assert!(e.message.contains("1 more profiles"), "{e}");
        assert!(e.message.contains("the 1 other profiles"), "{e}");
        assert!(Checked::default().refusal().is_none());
    }
}
