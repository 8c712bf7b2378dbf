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
}

impl ApiError {
    /// An error with `code` and a human-readable `message`.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            cause: None,
        }
    }

    /// Adds structured details to the answer.
    pub fn with_details(mut self, details: impl Serialize) -> Self {
        self.details = serde_json::to_value(details).ok();
        self
    }

    /// A server-side failure: logged with its cause, answered as `internal_error`.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::InternalError,
            message: Cow::Borrowed("the server failed to handle the request"),
            details: None,
            cause: Some(cause.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => Self {
                code: ErrorCode::ServiceUnavailable,
                message: Cow::Borrowed("the database is unavailable; try again shortly"),
                details: None,
                cause: Some(error.into()),
            },
            other => Self::internal(other),
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
        (status, axum::Json(body)).into_response()
    }
}
