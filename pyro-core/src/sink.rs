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
    /// Whether a later attempt can succeed (a timeout, a 503) or not (a 400).
    pub retryable: bool,
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
            retry_after: None,
            source: source.into(),
        }
    }

    /// A failure that will repeat whatever we do.
    pub fn permanent(sink: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            sink: sink.into(),
            retryable: false,
            retry_after: None,
            source: source.into(),
        }
    }
}

impl From<SinkError> for AppendError {
    fn from(e: SinkError) -> Self {
        if e.retryable {
            AppendError::Unavailable(Box::new(e))
        } else {
            AppendError::InvalidProfile(Box::new(e))
        }
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
