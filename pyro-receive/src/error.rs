//! Errors: [`RequestError`] (what a client is told, in Connect's JSON shape) and [`ServeError`]
//! (what the host is told when the server cannot run).

use std::fmt;
use std::net::SocketAddr;

use http::StatusCode;
use pyro_core::{AppendError, AppendErrorKind};

/// A Connect protocol error code (<https://connectrpc.com/docs/protocol#error-codes>), the
/// subset this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The request is malformed: bad protobuf, JSON, gzip, labels, query parameters.
    InvalidArgument,
    /// The client took too long to send its request.
    DeadlineExceeded,
    /// No such endpoint.
    NotFound,
    /// A limit downstream was hit; retrying later may succeed.
    ResourceExhausted,
    /// The request uses something this server does not implement (a `Content-Encoding`, a
    /// legacy format, an HTTP method).
    Unimplemented,
    /// A bug or unexpected failure downstream.
    Internal,
    /// A downstream is unreachable or shutting down; retrying later may succeed.
    Unavailable,
}

impl Code {
    /// The code as Connect serialises it (`invalid_argument`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::NotFound => "not_found",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unimplemented => "unimplemented",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }

    /// The HTTP status Connect assigns to the code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::InvalidArgument => StatusCode::BAD_REQUEST,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request was refused: the Connect code, the HTTP status and a message naming the problem.
///
/// The body sent to the client is `{"code":"…","message":"…"}`. The status is normally the
/// code's ([`Code::http_status`]); a few refusals use a more precise HTTP status with the code a
/// client should act on, as Pyroscope's `/ingest` does: a body over the size limit is `413` with
/// `invalid_argument` (retrying the same bytes cannot succeed, and `resource_exhausted` would make
/// Alloy's writer retry it), an unsupported `Content-Type` is `415` with `invalid_argument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    /// The Connect code.
    pub code: Code,
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a human.
    pub message: String,
}

impl RequestError {
    /// An error with the code's own HTTP status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            status: code.http_status(),
            message: message.into(),
        }
    }

    /// `invalid_argument` (400): the request is malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// 413 with `invalid_argument`: the body or a decompressed payload is over a limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::invalid(message)
        }
    }

    /// 415 with `invalid_argument`: the `Content-Type` is not one this endpoint reads.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ..Self::invalid(message)
        }
    }

    /// Maps a downstream failure: bad input stays `invalid_argument`; only a real outage,
    /// limit or bug becomes `unavailable`, `resource_exhausted` or `internal`.
    pub fn from_append(e: &AppendError) -> Self {
        let code = match e.kind() {
            AppendErrorKind::InvalidInput => Code::InvalidArgument,
            AppendErrorKind::Unavailable | AppendErrorKind::Shutdown => Code::Unavailable,
            AppendErrorKind::ResourceExhausted => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        Self::new(code, format!("forwarding failed: {e}"))
    }

    /// The JSON body Connect clients parse: `{"code":"…","message":"…"}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message }).to_string()
    }
}

/// The server could not start or stopped on an I/O error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Binding the listen address failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address as configured (`listen_address:listen_port`).
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bound listener could not be registered with the tokio runtime.
    #[error("cannot serve on {address}: {source}")]
    Listener {
        /// The bound address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_core::LabelError;

    #[test]
    fn append_errors_map_to_the_kind_they_are() {
        let e = RequestError::from_append(&AppendError::unavailable("connection refused"));
        assert_eq!((e.code, e.status.as_u16()), (Code::Unavailable, 503));
        assert!(e.message.contains("connection refused"));
        let e = RequestError::from_append(&AppendError::InvalidLabels(LabelError::Empty));
        assert_eq!((e.code, e.status.as_u16()), (Code::InvalidArgument, 400));
        let e = RequestError::from_append(&AppendError::ResourceExhausted("queue full".into()));
        assert_eq!((e.code, e.status.as_u16()), (Code::ResourceExhausted, 429));
        let e = RequestError::from_append(&AppendError::internal("bug"));
        assert_eq!((e.code, e.status.as_u16()), (Code::Internal, 500));
        let e = RequestError::from_append(&AppendError::Shutdown);
        assert_eq!(e.code, Code::Unavailable);
    }

    #[test]
    fn json_shape() {
        let e = RequestError::too_large("body \"x\" too large");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["code"], "invalid_argument");
        assert_eq!(v["message"], "body \"x\" too large");
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
