//! The [`Sink`] trait: the terminal side that moves a profile's bytes somewhere.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::profile::Profile;
use crate::receiver::{AppendError, BoxError, Receiver};

/// What kind of failure a [`SinkError`] is: what the writer in front of the sink does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkErrorKind {
    /// A later attempt may succeed (a timeout, a 503); the destination may have said when.
    Retryable {
        /// How long the destination asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The destination is rate-limiting us (a 429); retried only if the writer's policy says so.
    RateLimited {
        /// How long the destination asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The destination refused this profile's content (a 400 on it); sending it again will
    /// fail again.
    InvalidInput,
    /// The destination or its configuration fails whatever we send (a 401, a full disk).
    Permanent,
}

/// Why a [`Sink`] failed to deliver, and what trying again can do.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {source}")]
pub struct SinkError {
    /// The sink's name.
    pub sink: String,
    /// What kind of failure it is.
    pub kind: SinkErrorKind,
    /// What went wrong.
    #[source]
    pub source: BoxError,
}

impl SinkError {
    /// A failure that a later attempt may not repeat.
    pub fn retryable(sink: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::new(sink, SinkErrorKind::Retryable { retry_after: None }, source)
    }

    /// The destination is rate-limiting us, and may have said for how long.
    pub fn rate_limited(
        sink: impl Into<String>,
        retry_after: Option<Duration>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::new(sink, SinkErrorKind::RateLimited { retry_after }, source)
    }

    /// A failure of the destination that will repeat whatever we do (bad credentials, say).
    pub fn permanent(sink: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::new(sink, SinkErrorKind::Permanent, source)
    }

    /// The destination refused this profile's content; sending it again will fail again.
    pub fn invalid_input(sink: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::new(sink, SinkErrorKind::InvalidInput, source)
    }

    /// An error of any kind.
    pub fn new(sink: impl Into<String>, kind: SinkErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            sink: sink.into(),
            kind,
            source: source.into(),
        }
    }

    /// Sets how long the destination asked us to wait (for retryable and rate-limited errors).
    #[must_use]
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        match &mut self.kind {
            SinkErrorKind::Retryable { retry_after }
            | SinkErrorKind::RateLimited { retry_after } => {
                *retry_after = after;
            }
            SinkErrorKind::InvalidInput | SinkErrorKind::Permanent => {}
        }
        self
    }

    /// Whether a later attempt can succeed (rate limiting included).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            SinkErrorKind::Retryable { .. } | SinkErrorKind::RateLimited { .. }
        )
    }

    /// How long the destination asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            SinkErrorKind::Retryable { retry_after }
            | SinkErrorKind::RateLimited { retry_after } => retry_after,
            SinkErrorKind::InvalidInput | SinkErrorKind::Permanent => None,
        }
    }
}

impl From<SinkError> for AppendError {
    /// Retryable failures are [`AppendError::Unavailable`], rate limiting
    /// [`AppendError::ResourceExhausted`], refused content [`AppendError::InvalidProfile`],
    /// anything else [`AppendError::Internal`].
    fn from(e: SinkError) -> Self {
        match e.kind {
            SinkErrorKind::Retryable { .. } => AppendError::Unavailable(Box::new(e)),
            SinkErrorKind::RateLimited { .. } => AppendError::ResourceExhausted(Box::new(e)),
            SinkErrorKind::InvalidInput => AppendError::InvalidProfile(Box::new(e)),
            SinkErrorKind::Permanent => AppendError::Internal(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AppendErrorKind;

    #[test]
    fn kinds_map_to_append_errors() {
        let kind = |e: SinkError| AppendError::from(e).kind();
        assert_eq!(
            kind(SinkError::retryable("s", "503")),
            AppendErrorKind::Unavailable
        );
        assert_eq!(
            kind(SinkError::invalid_input("s", "400")),
            AppendErrorKind::InvalidInput
        );
        assert_eq!(
            kind(SinkError::permanent("s", "401")),
            AppendErrorKind::Internal
        );
        let limited = SinkError::rate_limited("s", Some(Duration::from_secs(3)), "429");
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(kind(limited), AppendErrorKind::ResourceExhausted);
        let e = SinkError::invalid_input("s", "400").with_retry_after(Some(Duration::ZERO));
        assert_eq!(e.retry_after(), None);
    }
}

/// One destination for profile bytes — a Pyroscope endpoint, a directory. A sink sends what it
/// is given: label policy (dropping `__meta_*`, external labels) and retries belong to the
/// receiver in front of it (the Pyroscope writer), which is why a sink reports whether a failure
/// is [`retryable`](SinkError::is_retryable) instead of retrying itself.
///
/// Object-safe, so a writer can hold `Vec<Arc<dyn Sink>>` chosen at run time. [`SinkReceiver`]
/// turns a sink into a [`Receiver`] when no retry policy is wanted (a local directory).
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (an endpoint URL, a directory).
    fn name(&self) -> &str;

    /// Delivers one profile.
    async fn send(&self, profile: &Profile) -> Result<(), SinkError>;
}

/// A [`Receiver`] that hands every profile straight to a [`Sink`], once.
#[derive(Debug, Clone)]
pub struct SinkReceiver<S> {
    sink: S,
}

impl<S> SinkReceiver<S> {
    /// Wraps `sink`.
    pub fn new(sink: S) -> Self {
        Self { sink }
    }

    /// The wrapped sink.
    pub fn get_ref(&self) -> &S {
        &self.sink
    }
}

#[async_trait]
impl<S: Sink> Receiver for SinkReceiver<S> {
    async fn append(&self, profile: Profile) -> Result<(), AppendError> {
        self.sink.send(&profile).await.map_err(AppendError::from)
    }
}
