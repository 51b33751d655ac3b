//! Errors: [`RequestError`] (what a client is told, in Connect's JSON shape) and [`ServeError`]
//! (what the host is told when the server cannot run).

use std::net::SocketAddr;

use http::StatusCode;
use pyro_core::AppendError;

/// The Connect protocol error code, shared with every pyro crate.
pub use pyro_core::ConnectCode as Code;

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
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
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
        Self::new(e.kind().connect_code(), format!("forwarding failed: {e}"))
    }

    /// The JSON body Connect clients parse: `{"code":"…","message":"…"}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "code": self.code.name(), "message": self.message }).to_string()
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
