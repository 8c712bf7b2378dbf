//! Extractors whose rejections answer in the one error shape instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use courier_protocol::ErrorCode;
use courier_protocol::strict_json::{self, StrictJsonError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body, like `axum::Json` but read with [`strict_json`] (an object is never
/// taken from an array, a number out of range is the wrong shape), with Courier's error
/// body on rejection.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let body = Bytes::from_request(request, state).await?;
        Ok(Self(strict_json::from_slice(&body)?))
    }
}

/// Whether the request says its body is JSON, by the rule `axum::Json` applies:
/// `application/json` or `application/*+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|name| name == "json"))
        })
}

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

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if timed_out(&rejection) {
            ApiError::new(
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time",
            )
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the server accepts",
            )
        } else {
            ApiError::new(ErrorCode::MalformedJson, rejection.body_text())
        }
    }
}

impl From<StrictJsonError> for ApiError {
    fn from(error: StrictJsonError) -> Self {
        match error {
            StrictJsonError::Syntax(_) => ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {error}"),
            ),
            StrictJsonError::Shape(_) => ApiError::new(
                ErrorCode::InvalidRequestBody,
                format!("the body does not have the expected shape: {error}"),
            ),
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
