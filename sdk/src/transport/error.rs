//! What can go wrong talking to the server, and which of it is worth retrying.
//!
//! No variant carries the access token: it travels only in a sensitive header, never in a
//! URL, and the sources kept here (reqwest's and tungstenite's errors) name neither
//! headers nor URLs (reqwest's URL is stripped: paths carry user IDs). Bodies that do not
//! decode are described by position, never quoted.

use std::fmt;
use std::time::Duration;

use courier_protocol::api::devices::DeviceLimitDetails;
use courier_protocol::{ErrorBody, ErrorCode};

use super::socket::StreamClosed;

/// Any error a transport call keeps as its cause.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a request or a stream operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The server refused the request with Courier's JSON error body. Match on `code`;
    /// `message` is for people.
    #[error("the server answered HTTP {status} {}: {message}", code.as_str())]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: ErrorCode,
        /// The server's human-readable explanation.
        message: String,
        /// Structured details where the code has them (e.g. the device list of
        /// `device_limit_reached`; see [`TransportError::device_limit_details`]).
        details: Option<serde_json::Value>,
        /// How long the server asked the client to wait before trying again
        /// (`Retry-After`, sent with `429 rate_limited` and `503 service_unavailable`).
        retry_after: Option<Duration>,
    },
    /// No answer came back: the server could not be reached (DNS, refused connection, TLS
    /// handshake), the connection broke, or the answer took too long.
    #[error("network error: {kind}")]
    Network {
        /// What kind of failure it was.
        kind: NetworkErrorKind,
        /// The underlying error (it names neither the token nor the URL).
        #[source]
        source: BoxError,
    },
    /// The server answered something that is not Courier's API: a body that does not
    /// decode, an error without the error shape (a proxy's page), an oversized body.
    #[error("unexpected response (HTTP {status}): {problem}")]
    UnexpectedResponse {
        /// The HTTP status of the answer.
        status: u16,
        /// What was wrong with it (never the body itself).
        problem: String,
    },
    /// The stream connection is closed; [`StreamClosed::should_reconnect`] says whether
    /// to open a new one.
    #[error("the stream connection closed: {reason}")]
    StreamClosed {
        /// Why it closed.
        reason: StreamClosed,
        /// The socket error behind a lost connection, if there was one.
        #[source]
        cause: Option<BoxError>,
    },
    /// The server sent a stream frame this SDK does not understand (a newer server, or a
    /// binary frame). The connection stays open: the next frame can be read.
    #[error("the server sent a stream frame this SDK does not understand (type {})", frame_type.as_deref().unwrap_or("unknown"))]
    UnexpectedFrame {
        /// The frame's `type` tag, if it had a short one.
        frame_type: Option<String>,
    },
    /// The server sent a stream item of a type this SDK does not know (a newer server).
    /// The connection stays open: acknowledge `seq` (the item cannot be used, and keeping
    /// it would stall the stream) and read the next frame.
    #[error("the server sent a stream item of a type this SDK does not know (type {item_type})")]
    UnknownItem {
        /// The item's `type` tag (at most 64 characters are quoted).
        item_type: String,
        /// The item's position in the stream.
        seq: u64,
    },
    /// The call needs an access token and the client has none (log in first).
    #[error("this call needs an access token and the client has none")]
    MissingToken,
    /// The access token has characters that cannot go in an HTTP header, so it cannot be
    /// a token the server issued.
    #[error("the access token cannot be sent in an HTTP header")]
    MalformedToken,
    /// The server's base URL cannot be used.
    #[error("invalid server URL: {reason}")]
    InvalidBaseUrl {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP or TLS client could not be set up (or a client frame could not be
    /// encoded, which the protocol's frames, plain numbers, never fail).
    #[error("could not set up the network client")]
    ClientSetup(#[source] BoxError),
}

/// What kind of network failure a [`TransportError::Network`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetworkErrorKind {
    /// No connection could be opened: name resolution, refused connection, unreachable
    /// network, or a failed TLS handshake.
    Connect,
    /// The connection, the request or the handshake took longer than its timeout.
    Timeout,
    /// The connection opened but the exchange failed (reset, closed early, a broken
    /// WebSocket handshake).
    Other,
}

impl fmt::Display for NetworkErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkErrorKind::Connect => "could not connect to the server",
            NetworkErrorKind::Timeout => "the server did not answer in time",
            NetworkErrorKind::Other => "the exchange with the server failed",
        })
    }
}

impl TransportError {
    /// Whether trying the same thing again later (with backoff) can succeed: network
    /// failures, server errors (5xx), rate limiting (429), and stream closes after which
    /// reconnecting makes sense. Never a client error (4xx): the same request would be
    /// refused again.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Network { .. } => true,
            TransportError::Api { status, .. }
            | TransportError::UnexpectedResponse { status, .. } => retryable_status(*status),
            TransportError::StreamClosed { reason, .. } => reason.should_reconnect(),
            TransportError::UnexpectedFrame { .. }
            | TransportError::UnknownItem { .. }
            | TransportError::MissingToken
            | TransportError::MalformedToken
            | TransportError::InvalidBaseUrl { .. }
            | TransportError::ClientSetup(_) => false,
        }
    }

    /// The server's error code, for an [`Api`](TransportError::Api) error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again (its `Retry-After`), if it
    /// said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TransportError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            TransportError::Api { status, .. }
            | TransportError::UnexpectedResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The user's devices and the limit, for a `device_limit_reached` refusal at login:
    /// what the app shows so the user can pick a device to replace (`replaceDeviceId`).
    pub fn device_limit_details(&self) -> Option<DeviceLimitDetails> {
        match self {
            TransportError::Api {
                code: ErrorCode::DeviceLimitReached,
                details: Some(details),
                ..
            } => serde_json::from_value(details.clone()).ok(),
            _ => None,
        }
    }

    /// Why the stream closed, for a [`StreamClosed`](TransportError::StreamClosed) error.
    pub fn stream_closed(&self) -> Option<StreamClosed> {
        match self {
            TransportError::StreamClosed { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    pub(crate) fn network(kind: NetworkErrorKind, source: impl Into<BoxError>) -> Self {
        TransportError::Network {
            kind,
            source: source.into(),
        }
    }

    /// A reqwest failure: no answer, or an answer whose body could not be read.
    pub(crate) fn from_reqwest(error: reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            NetworkErrorKind::Timeout
        } else if error.is_connect() {
            NetworkErrorKind::Connect
        } else {
            NetworkErrorKind::Other
        };
        // The URL goes: its path can carry a user ID, and none of it helps the caller.
        Self::network(kind, error.without_url())
    }

    /// A non-success answer: Courier's error body if it has one, and the answer's
    /// `Retry-After` header value (whole seconds; a date or garbage is ignored).
    pub(crate) fn from_error_answer(status: u16, body: &[u8], retry_after: Option<&[u8]>) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => TransportError::Api {
                status,
                code: error.code,
                message: error.message,
                details: error.details,
                retry_after: retry_after
                    .and_then(|value| std::str::from_utf8(value).ok())
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
            },
            Err(_) if body.is_empty() => TransportError::UnexpectedResponse {
                status,
                problem: "an error answer without a body".into(),
            },
            Err(_) => TransportError::UnexpectedResponse {
                status,
                problem: "an error answer without Courier's error body".into(),
            },
        }
    }

    /// A success answer whose body is not the type the endpoint documents.
    pub(crate) fn undecodable(status: u16, error: &serde_json::Error) -> Self {
        // Position and category only: serde's message can quote the body, and bodies
        // carry tokens and ciphertexts.
        let category = match error.classify() {
            serde_json::error::Category::Io => "an I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        TransportError::UnexpectedResponse {
            status,
            problem: format!(
                "the body does not decode: {category} at line {} column {}",
                error.line(),
                error.column()
            ),
        }
    }
}

/// Server failures and rate limiting pass; client errors do not.
fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 429
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: ErrorCode) -> TransportError {
        TransportError::Api {
            status,
            code,
            message: "m".into(),
            details: None,
            retry_after: None,
        }
    }

    #[test]
    fn server_failures_and_rate_limits_are_retryable_client_errors_are_not() {
        assert!(api(500, ErrorCode::InternalError).is_retryable());
        assert!(api(503, ErrorCode::ServiceUnavailable).is_retryable());
        assert!(api(429, ErrorCode::Unknown).is_retryable());
        for (status, code) in [
            (400, ErrorCode::InvalidRequestBody),
            (401, ErrorCode::InvalidToken),
            (401, ErrorCode::DeviceRemoved),
            (404, ErrorCode::UserNotFound),
            (409, ErrorCode::DeviceListMismatch),
            (413, ErrorCode::EnvelopeTooLarge),
        ] {
            assert!(!api(status, code).is_retryable(), "{status} {code:?}");
        }
        let proxy_page = TransportError::UnexpectedResponse {
            status: 502,
            problem: "p".into(),
        };
        assert!(proxy_page.is_retryable());
        assert!(!TransportError::MissingToken.is_retryable());
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":{"code":"device_limit_reached","message":"full","details":{"count":1,"limit":1,"devices":[]}}}"#;
        let error = TransportError::from_error_answer(409, body, None);
        assert_eq!(error.code(), Some(ErrorCode::DeviceLimitReached));
        assert_eq!(error.status(), Some(409));
        let details = error.device_limit_details().unwrap();
        assert_eq!((details.count, details.limit), (1, 1));

        let html = TransportError::from_error_answer(502, b"<html>bad gateway</html>", None);
        assert!(matches!(
            html,
            TransportError::UnexpectedResponse { status: 502, .. }
        ));
    }

    #[test]
    fn undecodable_bodies_are_not_quoted() {
        let error = serde_json::from_str::<u32>(r#""cdt_secret""#).unwrap_err();
        let error = TransportError::undecodable(200, &error);
        assert!(!error.to_string().contains("cdt_secret"), "{error}");
        assert!(!format!("{error:?}").contains("cdt_secret"), "{error:?}");
    }
}
