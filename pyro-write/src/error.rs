//! Errors: Connect codes, push failures, configuration mistakes and writer-level outcomes.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use pyro_core::ConnectCode;

/// One push attempt to one endpoint failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The server answered with an error.
    #[error("endpoint {endpoint}: server answered HTTP {status} with code {code}: {message}")]
    Status {
        /// The endpoint's name.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The Connect code: from the JSON error body, else inferred from the status.
        code: ConnectCode,
        /// The server's message (or the start of a non-Connect body).
        message: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No answer within `remote_timeout`.
    #[error("endpoint {endpoint}: no answer within {timeout:?}")]
    Timeout {
        /// The endpoint's name.
        endpoint: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Connecting or sending failed.
    #[error("endpoint {endpoint}: request failed: {source}")]
    Transport {
        /// The endpoint's name.
        endpoint: String,
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// Reading the response failed.
    #[error("endpoint {endpoint}: reading the response failed: {source}")]
    Response {
        /// The endpoint's name.
        endpoint: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A password or token file could not be read.
    #[error("endpoint {endpoint}: cannot read credentials from {path}: {source}")]
    Credentials {
        /// The endpoint's name.
        endpoint: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be built (a header value from a credentials file, say).
    #[error("endpoint {endpoint}: cannot build the request: {source}")]
    Request {
        /// The endpoint's name.
        endpoint: String,
        /// The cause.
        #[source]
        source: http::Error,
    },
}

impl PushError {
    /// The Connect code of this failure (`deadline_exceeded` for a timeout, `unavailable` for a
    /// transport failure, …).
    pub fn code(&self) -> ConnectCode {
        match self {
            Self::Status { code, .. } => *code,
            Self::Timeout { .. } => ConnectCode::DeadlineExceeded,
            Self::Transport { .. } | Self::Response { .. } => ConnectCode::Unavailable,
            Self::Credentials { .. } => ConnectCode::Unauthenticated,
            Self::Request { .. } => ConnectCode::Internal,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether a later attempt can succeed (see [`ConnectCode::is_retryable`]). A missing
    /// credentials file counts as retryable: it may appear (a mounted secret).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Credentials { .. } => true,
            Self::Request { .. } => false,
            _ => self.code().is_retryable(),
        }
    }

    /// The server's `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is not an absolute `http` or `https` URL.
    #[error("endpoint {endpoint}: invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The endpoint's name.
        endpoint: String,
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A header name or value is not valid HTTP.
    #[error("endpoint {endpoint}: invalid header {name:?}")]
    InvalidHeader {
        /// The endpoint's name.
        endpoint: String,
        /// The header name.
        name: String,
    },
    /// Two settings exclude each other (two auth methods, password and password file, …).
    #[error("endpoint {endpoint}: {message}")]
    Conflict {
        /// The endpoint's name.
        endpoint: String,
        /// Which settings.
        message: String,
    },
    /// A TLS file could not be read or parsed.
    #[error("endpoint {endpoint}: tls: cannot load {path}: {message}")]
    TlsFile {
        /// The endpoint's name.
        endpoint: String,
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// rustls refused the TLS settings.
    #[error("endpoint {endpoint}: tls: {source}")]
    Tls {
        /// The endpoint's name.
        endpoint: String,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// A queue or retry limit is zero or out of range.
    #[error("endpoint {endpoint}: {message}")]
    InvalidLimit {
        /// The endpoint's name.
        endpoint: String,
        /// Which limit.
        message: String,
    },
    /// An external label breaks a label rule.
    #[error("external label {name:?}: {source}")]
    ExternalLabel {
        /// The label name.
        name: String,
        /// The rule it breaks.
        #[source]
        source: pyro_core::LabelError,
    },
    /// The writer needs a tokio runtime to run its endpoint workers on.
    #[error("the writer must be created inside a tokio runtime")]
    NoRuntime,
}

/// Why a profile was dropped for an endpoint; the `reason` label of
/// `pyroscope_write_dropped_profiles_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Its labels break a Pyroscope rule (it was sent nowhere).
    InvalidLabels,
    /// Its pprof payload is broken (checked with [`WriterConfig::check_profiles`](crate::WriterConfig)
    /// or ingest limits on).
    InvalidProfile,
    /// The endpoint's queue stayed full.
    QueueFull,
    /// The profile alone is larger than the endpoint's whole queue.
    TooLarge,
    /// The endpoint answered with an error that retrying cannot fix.
    Rejected,
    /// The endpoint kept failing until the retry budget ran out.
    RetriesExhausted,
    /// The writer shut down (or its flush timed out) before the profile was delivered.
    Shutdown,
    /// It breaks one of Pyroscope's ingest limits ([`WriterConfig::limits`](crate::WriterConfig)),
    /// so Pyroscope would refuse it: it was sent nowhere. The metric label is the rule
    /// (`profile_size_limit`, `not_in_ingestion_window`, …).
    Limit(pyro_core::limits::Rule),
}

impl DropReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidLabels => "invalid_labels",
            Self::InvalidProfile => "invalid_profile",
            Self::QueueFull => "queue_full",
            Self::TooLarge => "too_large",
            Self::Rejected => "rejected",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Shutdown => "shutdown",
            Self::Limit(rule) => rule.as_str(),
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A profile was not delivered to one endpoint.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {endpoint}: profile dropped ({reason}){}", detail(.attempts, .source))]
pub struct DeliveryError {
    /// The endpoint's name.
    pub endpoint: String,
    /// Why.
    pub reason: DropReason,
    /// Attempts made (0 when it was never sent).
    pub attempts: u32,
    /// The last failure, when there was one.
    #[source]
    pub source: Option<pyro_core::SinkError>,
}

fn detail(attempts: &u32, source: &Option<pyro_core::SinkError>) -> String {
    match source {
        Some(e) => format!(" after {attempts} attempts: {e}"),
        None => String::new(),
    }
}

impl DeliveryError {
    /// The Connect code of the last failure, when it came from a [`PushError`].
    pub fn code(&self) -> Option<ConnectCode> {
        self.push_error().map(PushError::code)
    }

    /// The last failure as a [`PushError`], when the sink is a [`PushSink`](crate::PushSink).
    pub fn push_error(&self) -> Option<&PushError> {
        self.source
            .as_ref()
            .and_then(|e| e.source.downcast_ref::<PushError>())
    }
}

impl From<DeliveryError> for pyro_core::AppendError {
    fn from(e: DeliveryError) -> Self {
        use pyro_core::AppendError;
        match e.reason {
            DropReason::InvalidLabels
            | DropReason::InvalidProfile
            | DropReason::TooLarge
            | DropReason::Limit(_) => AppendError::invalid_profile(e),
            DropReason::QueueFull => AppendError::ResourceExhausted(Box::new(e)),
            DropReason::Shutdown => AppendError::Shutdown,
            DropReason::RetriesExhausted => match e.code() {
                Some(ConnectCode::ResourceExhausted) => AppendError::ResourceExhausted(Box::new(e)),
                _ => AppendError::unavailable(e),
            },
            DropReason::Rejected => match e.code() {
                Some(ConnectCode::ResourceExhausted) => AppendError::ResourceExhausted(Box::new(e)),
                Some(
                    ConnectCode::InvalidArgument
                    | ConnectCode::FailedPrecondition
                    | ConnectCode::OutOfRange,
                ) => AppendError::invalid_profile(e),
                None => AppendError::invalid_profile(e),
                _ => AppendError::internal(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_classify() {
        for c in [
            ConnectCode::Canceled,
            ConnectCode::Unknown,
            ConnectCode::InvalidArgument,
            ConnectCode::DeadlineExceeded,
            ConnectCode::NotFound,
            ConnectCode::AlreadyExists,
            ConnectCode::PermissionDenied,
            ConnectCode::ResourceExhausted,
            ConnectCode::FailedPrecondition,
            ConnectCode::Aborted,
            ConnectCode::OutOfRange,
            ConnectCode::Unimplemented,
            ConnectCode::Internal,
            ConnectCode::Unavailable,
            ConnectCode::DataLoss,
            ConnectCode::Unauthenticated,
        ] {
            assert_eq!(ConnectCode::from_name(c.name()), Some(c));
        }
        assert_eq!(ConnectCode::from_name("bogus"), None);
        // A proxy's plain 4xx is never retried (except 408/429); 5xx always is.
        for s in [400, 401, 403, 404, 409, 413, 415, 422] {
            assert!(!ConnectCode::from_http_status(s).is_retryable(), "{s}");
        }
        for s in [408, 500, 502, 503, 504, 599] {
            assert!(ConnectCode::from_http_status(s).is_retryable(), "{s}");
        }
        assert_eq!(
            ConnectCode::from_http_status(429),
            ConnectCode::ResourceExhausted
        );
    }
}
