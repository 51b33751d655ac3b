//! Connect protocol error codes (<https://connectrpc.com/docs/protocol#error-codes>): what the
//! Pyroscope API answers with, what the receiver sends, and what the writer retries on. One
//! enum for every crate.

use std::fmt;

/// A Connect protocol error code (`invalid_argument`, `unavailable`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectCode {
    /// `canceled`
    Canceled,
    /// `unknown`
    Unknown,
    /// `invalid_argument`
    InvalidArgument,
    /// `deadline_exceeded`
    DeadlineExceeded,
    /// `not_found`
    NotFound,
    /// `already_exists`
    AlreadyExists,
    /// `permission_denied`
    PermissionDenied,
    /// `resource_exhausted`
    ResourceExhausted,
    /// `failed_precondition`
    FailedPrecondition,
    /// `aborted`
    Aborted,
    /// `out_of_range`
    OutOfRange,
    /// `unimplemented`
    Unimplemented,
    /// `internal`
    Internal,
    /// `unavailable`
    Unavailable,
    /// `data_loss`
    DataLoss,
    /// `unauthenticated`
    Unauthenticated,
}

impl ConnectCode {
    /// Parses the wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "canceled" => Self::Canceled,
            "unknown" => Self::Unknown,
            "invalid_argument" => Self::InvalidArgument,
            "deadline_exceeded" => Self::DeadlineExceeded,
            "not_found" => Self::NotFound,
            "already_exists" => Self::AlreadyExists,
            "permission_denied" => Self::PermissionDenied,
            "resource_exhausted" => Self::ResourceExhausted,
            "failed_precondition" => Self::FailedPrecondition,
            "aborted" => Self::Aborted,
            "out_of_range" => Self::OutOfRange,
            "unimplemented" => Self::Unimplemented,
            "internal" => Self::Internal,
            "unavailable" => Self::Unavailable,
            "data_loss" => Self::DataLoss,
            "unauthenticated" => Self::Unauthenticated,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Canceled => "canceled",
            Self::Unknown => "unknown",
            Self::InvalidArgument => "invalid_argument",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::FailedPrecondition => "failed_precondition",
            Self::Aborted => "aborted",
            Self::OutOfRange => "out_of_range",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::DataLoss => "data_loss",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    /// The code for a non-200 response that carried no Connect error body (a proxy's answer).
    ///
    /// This follows Pyroscope's own `HTTPToCode` rather than connect-go's, on purpose: connect-go
    /// turns a plain 400 into `internal` and a plain 429 into `unavailable`, which makes Alloy
    /// retry a proxy's validation errors and ignore `retry_on_http_429`. Here every 4xx except
    /// 408 and 429 maps to a code that is never retried.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 | 405 | 415 | 501 => Self::Unimplemented,
            408 | 504 => Self::DeadlineExceeded,
            409 => Self::AlreadyExists,
            412 => Self::FailedPrecondition,
            429 | 431 => Self::ResourceExhausted,
            499 => Self::Canceled,
            502 | 503 => Self::Unavailable,
            400..=499 => Self::InvalidArgument,
            500 => Self::Internal,
            _ => Self::Unknown,
        }
    }

    /// The HTTP status the Connect protocol gives the code
    /// (<https://connectrpc.com/docs/protocol#error-codes>).
    pub fn http_status(self) -> u16 {
        match self {
            Self::Canceled => 499,
            Self::Unknown | Self::Internal | Self::DataLoss => 500,
            Self::InvalidArgument | Self::FailedPrecondition | Self::OutOfRange => 400,
            Self::DeadlineExceeded => 504,
            Self::NotFound => 404,
            Self::AlreadyExists | Self::Aborted => 409,
            Self::PermissionDenied => 403,
            Self::ResourceExhausted => 429,
            Self::Unimplemented => 501,
            Self::Unavailable => 503,
            Self::Unauthenticated => 401,
        }
    }

    /// Whether a later attempt can succeed: `unavailable`, `internal`, `unknown`,
    /// `deadline_exceeded`, `aborted`, `data_loss` and `resource_exhausted` (the last subject to
    /// the writer's `retry_on_http_429`).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Unavailable
                | Self::Internal
                | Self::Unknown
                | Self::DeadlineExceeded
                | Self::Aborted
                | Self::DataLoss
                | Self::ResourceExhausted
        )
    }
}

impl fmt::Display for ConnectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_statuses_are_connects() {
        for status in [
            400, 401, 403, 404, 408, 409, 412, 429, 499, 500, 502, 503, 504, 418,
        ] {
            let code = ConnectCode::from_http_status(status);
            assert_eq!(ConnectCode::from_name(code.name()), Some(code));
        }
        assert_eq!(ConnectCode::InvalidArgument.http_status(), 400);
        assert_eq!(ConnectCode::ResourceExhausted.http_status(), 429);
        assert_eq!(ConnectCode::Unavailable.to_string(), "unavailable");
        assert_eq!(ConnectCode::from_name("bogus"), None);
    }
}
