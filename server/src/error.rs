//! [`ApiError`]: the one error type handlers return, rendered as the one JSON error body.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use courier_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use serde::Serialize;

/// An error answer: a stable code, a message for humans, optional details. Server-side
/// failures keep their cause for the log and answer only `internal_error`.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    details: Option<serde_json::Value>,
    cause: Option<anyhow::Error>,
    /// Seconds the client should wait before trying again (`Retry-After`).
    retry_after: Option<u64>,
}

/// What a client is told to wait when the database is unavailable: the pool gives up on
/// a connection after a few seconds, so trying again sooner would only queue again.
const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 2;

impl ApiError {
    /// An error with `code` and a human-readable `message`.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            cause: None,
            retry_after: None,
        }
    }

    /// Adds structured details to the answer.
    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    /// Tells the client when to try again (`Retry-After`, in seconds).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A server-side failure: logged with its cause, answered as `internal_error`.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::InternalError,
            message: Cow::Borrowed("the server failed to handle the request"),
            details: None,
            cause: Some(cause.into()),
            retry_after: None,
        }
    }

    /// The server cannot serve this now (its database is unreachable, or it is stopping):
    /// `503 service_unavailable` with `Retry-After`, the cause logged.
    pub fn unavailable(message: &'static str, cause: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::ServiceUnavailable,
            message: Cow::Borrowed(message),
            details: None,
            cause: Some(cause.into()),
            retry_after: Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&error) {
            Self::unavailable("the database is unavailable; try again shortly", error)
        } else {
            Self::internal(error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            // The cause goes to the log only: it may name tables, hosts or internals.
            match &self.cause {
                Some(cause) => tracing::error!(
                    code = self.code.as_str(),
                    error = format!("{cause:#}"),
                    "request failed"
                ),
                None => tracing::error!(code = self.code.as_str(), "request failed"),
            }
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.into_owned(),
                details: self.details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
