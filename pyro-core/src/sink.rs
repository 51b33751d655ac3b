//! The [`Sink`] trait: the terminal side that moves a profile's bytes somewhere.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::profile::Profile;
use crate::receiver::{AppendError, BoxError, Receiver};

/// Why a [`Sink`] failed to deliver, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {source}")]
pub struct SinkError {
    /// The sink's name.
    pub sink: String,
    /// Whether a later attempt can succeed (a timeout, a 503) or not (a 400, a 401).
    pub retryable: bool,
    /// Whether the profile itself was refused (a 400 on its content), as opposed to a failure
    /// of the destination or its configuration (a 401, a full disk).
    pub invalid_input: bool,
    /// How long the destination asked us to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// What went wrong.
    #[source]
    pub source: BoxError,
}

impl SinkError {
    /// A failure that a later attempt may not repeat.
    pub fn retryable(sink: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            sink: sink.into(),
            retryable: true,
            invalid_input: false,
            retry_after: None,
            source: source.into(),
        }
    }

    /// A failure of the destination that will repeat whatever we do (bad credentials, say).
    pub fn permanent(sink: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(sink, source)
        }
    }

    /// The destination refused this profile's content; sending it again will fail again.
    pub fn invalid_input(sink: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            invalid_input: true,
            ..Self::permanent(sink, source)
        }
    }
}

impl From<SinkError> for AppendError {
    /// Retryable failures are [`AppendError::Unavailable`], refused content is
    /// [`AppendError::InvalidProfile`], anything else [`AppendError::Internal`].
    fn from(e: SinkError) -> Self {
        if e.retryable {
            AppendError::Unavailable(Box::new(e))
        } else if e.invalid_input {
            AppendError::InvalidProfile(Box::new(e))
        } else {
            AppendError::Internal(Box::new(e))
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
    }
}

/// One destination for profile bytes — a Pyroscope endpoint, a directory. A sink sends what it
/// is given: label policy (dropping `__meta_*`, external labels) and retries belong to the
/// receiver in front of it (the Pyroscope writer), which is why a sink reports whether a failure
/// is [`retryable`](SinkError::retryable) instead of retrying itself.
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
