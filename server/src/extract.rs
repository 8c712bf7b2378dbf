//! Extractors whose rejections answer in the one error shape instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use courier_protocol::ErrorCode;

use crate::error::ApiError;

/// `axum::Json` with Courier's error body on rejection.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with Courier's error body on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with Courier's error body on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Whether a body error comes from the connection guard's body timeout.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        // An `io::Error` does not list the error it wraps among its sources.
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<crate::serve::BodyTimedOut>());
        if wrapped || error.is::<crate::serve::BodyTimedOut>() {
            return true;
        }
        source = error.source();
    }
    false
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if let JsonRejection::BytesRejection(bytes) = &rejection
            && timed_out(bytes)
        {
            return ApiError::new(
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time",
            );
        }
        match &rejection {
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::new(ErrorCode::MalformedJson, rejection.body_text())
            }
            JsonRejection::JsonDataError(_) => {
                ApiError::new(ErrorCode::InvalidRequestBody, rejection.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON with Content-Type: application/json",
            ),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the server accepts",
            ),
            _ => ApiError::new(ErrorCode::MalformedJson, rejection.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(ErrorCode::InvalidPathParameter, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(ErrorCode::InvalidQueryParameter, rejection.body_text())
    }
}
