//! The [`Receiver`] trait: anything that accepts profiles.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::labels::LabelError;
use crate::lifecycle::LifecycleError;
use crate::profile::Profile;

/// A boxed error, the currency for causes from other crates.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`AppendError`] is, so a caller can decide what to do (retry, answer
/// an HTTP client with the right status, count a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AppendErrorKind {
    /// The profile itself is bad (labels, payload); sending it again will fail again.
    InvalidInput,
    /// A downstream is unreachable or failing; a later attempt may succeed.
    Unavailable,
    /// A limit was hit (memory budget, rate limit); a later attempt may succeed.
    ResourceExhausted,
    /// The receiver has been shut down.
    Shutdown,
    /// A bug or an unexpected failure.
    Internal,
}

impl AppendErrorKind {
    /// Whether sending the same profile again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::ResourceExhausted)
    }

    /// The Connect protocol code for this kind (`invalid_argument`, `unavailable`, …).
    pub fn connect_code(self) -> crate::ConnectCode {
        use crate::ConnectCode;
        match self {
            Self::InvalidInput => ConnectCode::InvalidArgument,
            Self::Unavailable | Self::Shutdown => ConnectCode::Unavailable,
            Self::ResourceExhausted => ConnectCode::ResourceExhausted,
            Self::Internal => ConnectCode::Internal,
        }
    }
}

/// A profile could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The profile's labels break a Pyroscope rule.
    #[error("invalid labels: {0}")]
    InvalidLabels(#[from] LabelError),
    /// The profile is bad in another way (its payload, for instance).
    #[error("invalid profile: {0}")]
    InvalidProfile(#[source] BoxError),
    /// A downstream is unreachable or failing.
    #[error("unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A limit was hit.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(#[source] BoxError),
    /// The receiver has been shut down.
    #[error("receiver is shut down")]
    Shutdown,
    /// An unexpected failure.
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
    /// Several children of a [`Fanout`](crate::Fanout) failed.
    #[error("{} receivers failed: {}", .0.len(), join_messages(.0))]
    Multiple(Vec<AppendError>),
}

fn join_messages(errors: &[AppendError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl AppendError {
    /// The kind of failure. For [`AppendError::Multiple`], the most actionable kind among the
    /// children: bad input first (no child can take it), then internal, exhausted, unavailable.
    pub fn kind(&self) -> AppendErrorKind {
        match self {
            Self::InvalidLabels(_) | Self::InvalidProfile(_) => AppendErrorKind::InvalidInput,
            Self::Unavailable(_) => AppendErrorKind::Unavailable,
            Self::ResourceExhausted(_) => AppendErrorKind::ResourceExhausted,
            Self::Shutdown => AppendErrorKind::Shutdown,
            Self::Internal(_) => AppendErrorKind::Internal,
            Self::Multiple(errors) => {
                let kinds: Vec<_> = errors.iter().map(AppendError::kind).collect();
                [
                    AppendErrorKind::InvalidInput,
                    AppendErrorKind::Internal,
                    AppendErrorKind::ResourceExhausted,
                    AppendErrorKind::Unavailable,
                    AppendErrorKind::Shutdown,
                ]
                .into_iter()
                .find(|k| kinds.contains(k))
                .unwrap_or(AppendErrorKind::Internal)
            }
        }
    }

    /// Joins errors: none gives `None`, one gives itself, more give [`AppendError::Multiple`]
    /// (flattened).
    pub fn join(errors: impl IntoIterator<Item = AppendError>) -> Option<AppendError> {
        let mut flat = Vec::new();
        for e in errors {
            match e {
                Self::Multiple(inner) => flat.extend(inner),
                e => flat.push(e),
            }
        }
        match flat.len() {
            0 => None,
            1 => flat.pop(),
            _ => Some(Self::Multiple(flat)),
        }
    }

    /// Shorthand for [`AppendError::Unavailable`] from any error.
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }

    /// Shorthand for [`AppendError::Internal`] from any error.
    pub fn internal(e: impl Into<BoxError>) -> Self {
        Self::Internal(e.into())
    }

    /// Shorthand for [`AppendError::InvalidProfile`] from any error.
    pub fn invalid_profile(e: impl Into<BoxError>) -> Self {
        Self::InvalidProfile(e.into())
    }
}

/// Accepts profiles: the input side of every pipeline stage (an enricher, a fan-out, the
/// Pyroscope writer, a directory of pprof files).
///
/// Receivers compose as values: a stage holds its downstream as `Arc<dyn Receiver>` (often a
/// [`Fanout`](crate::Fanout)) and calls [`append`](Receiver::append) on it, so chains can be
/// assembled at run time from configuration. The trait is object-safe for exactly that reason
/// (`#[async_trait]` boxes the future); implement it with `#[pyro_core::async_trait]`.
///
/// Contract:
/// - `append` may be called concurrently from many tasks.
/// - It must not block the thread; waiting (for a slot in a bounded queue, say) happens by
///   awaiting, and should be bounded in time.
/// - An error concerns this profile only: one bad profile never makes a receiver drop others.
/// - [`flush`](Receiver::flush) and [`shutdown`](Receiver::shutdown) follow the
///   [lifecycle](crate::lifecycle) rule: a stage that holds profiles delivers them; a stage that
///   forwards passes the call on. The defaults do nothing, which is right for a stage that
///   neither holds nor forwards.
///
/// ```
/// use pyro_core::{async_trait, AppendError, Profile, Receiver};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// /// Counts what it receives.
/// #[derive(Debug, Default)]
/// struct Counter(AtomicUsize);
///
/// #[async_trait]
/// impl Receiver for Counter {
///     async fn append(&self, _profile: Profile) -> Result<(), AppendError> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Receiver: Send + Sync + fmt::Debug {
    /// Accepts one profile.
    async fn append(&self, profile: Profile) -> Result<(), AppendError>;

    /// Delivers everything accepted so far (and flushes what this stage forwards to), waiting
    /// at most until `deadline`.
    async fn flush(&self, deadline: std::time::Instant) -> Result<(), LifecycleError> {
        let _ = deadline;
        Ok(())
    }

    /// Stops accepting, delivers what is pending, then shuts down what this stage forwards to;
    /// at most until `deadline`. Idempotent.
    async fn shutdown(&self, deadline: std::time::Instant) -> Result<(), LifecycleError> {
        let _ = deadline;
        Ok(())
    }
}

/// Smart pointers to a receiver are receivers: every call goes to the pointee.
macro_rules! forward_receiver {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        impl<R: Receiver + ?Sized> Receiver for $ptr<R> {
            async fn append(&self, profile: Profile) -> Result<(), AppendError> {
                (**self).append(profile).await
            }

            async fn flush(&self, deadline: std::time::Instant) -> Result<(), LifecycleError> {
                (**self).flush(deadline).await
            }

            async fn shutdown(&self, deadline: std::time::Instant) -> Result<(), LifecycleError> {
                (**self).shutdown(deadline).await
            }
        }
    )*};
}

forward_receiver!(Arc, Box);

/// A shared, type-erased receiver: what `forward_to` lists hold.
pub type DynReceiver = Arc<dyn Receiver>;

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: &dyn Receiver) {}

    #[test]
    fn kind_of_multiple_prefers_invalid_input() {
        let e = AppendError::join([
            AppendError::unavailable("down"),
            AppendError::InvalidLabels(LabelError::Empty),
        ])
        .unwrap();
        assert_eq!(e.kind(), AppendErrorKind::InvalidInput);
        assert!(e.to_string().contains("down"));
        assert!(AppendError::join([]).is_none());
        let one = AppendError::join([AppendError::Shutdown]).unwrap();
        assert!(matches!(one, AppendError::Shutdown));
        assert!(AppendErrorKind::Unavailable.is_retryable());
        assert!(!AppendErrorKind::InvalidInput.is_retryable());
    }
}
