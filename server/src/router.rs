//! The router: every route with its OpenAPI annotation, the fallbacks, and the layers.

use std::any::Any;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use courier_protocol::ErrorCode;
use courier_protocol::api::errors;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Settings;
use crate::error::ApiError;
use crate::routes::{accounts, channels, devices, health, inbox, keys, messages, receipts, tags};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Courier",
        description = "End-to-end-encrypted multi-device messaging: the HTTP API (docs/api.md), the WebSocket stream (`GET /v1/ws`; its frames are the ServerFrame and ClientFrame schemas, its close codes WebSocketCloseCode) and, for the encryption inside the opaque ciphertexts, docs/protocol.md.\n\nEvery error answers with ErrorBody; each operation lists the codes it answers with per status. Besides those, any request may be answered by the HTTP layer before it reaches an operation: `invalid_http_request` (400), `request_timeout` (408), `headers_too_large` (431), `too_many_connections` (503), `not_found` (404, no such route) and `method_not_allowed` (405).",
    ),
    modifiers(&BearerAuth),
    components(schemas(
        ErrorCode,
        courier_protocol::ErrorBody,
        courier_protocol::api::devices::DeviceLimitDetails,
        courier_protocol::api::messages::DeviceListMismatch,
        courier_protocol::api::channels::MissingSenderKeys,
        courier_protocol::api::keys::DeviceRef,
        errors::FieldDetails,
        errors::SignatureDetails,
        errors::KeyLengthDetails,
        errors::FieldLimitDetails,
        errors::CountLimitDetails,
        errors::DuplicateKeyIdDetails,
        errors::KeyConflictDetails,
        errors::StoredKeysDetails,
        errors::SupportedVersionsDetails,
        errors::UnknownUsersDetails,
        errors::DevicesDetails,
        errors::RateLimitDetails,
        courier_protocol::api::stream::ServerFrame,
        courier_protocol::api::stream::ControlFrame,
        courier_protocol::api::stream::ClientFrame,
    )),
    tags(
        (name = tags::ACCOUNTS, description = "Accounts and login (device registration)"),
        (name = tags::DEVICES, description = "The caller's own devices"),
        (name = tags::KEYS, description = "The key directory"),
        (name = tags::MESSAGES, description = "Messages, envelopes, the inbox and the WebSocket stream"),
        (name = tags::RECEIPTS, description = "Delivery and read receipts, read-receipt privacy"),
        (name = tags::CHANNELS, description = "Channels: members, sender keys, group messages"),
        (name = tags::OPERATIONS, description = "Probes"),
    ),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("Courier device access token")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(accounts::create_account))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::delete_account))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::remove_device))
        .routes(routes!(keys::publish_identity_keys))
        .routes(routes!(keys::upload_one_time_keys))
        .routes(routes!(keys::set_fallback_key))
        .routes(routes!(keys::key_count))
        .routes(routes!(keys::user_devices))
        .routes(routes!(keys::claim_keys))
        .routes(routes!(messages::send_message))
        .routes(routes!(messages::get_envelope))
        .routes(routes!(messages::mark_delivered))
        .routes(routes!(inbox::list_inbox))
        .routes(routes!(inbox::ack_inbox))
        .routes(routes!(inbox::open_socket))
        .routes(routes!(receipts::mark_read))
        .routes(routes!(receipts::delivery_state))
        .routes(routes!(receipts::get_privacy, receipts::update_privacy))
        .routes(routes!(channels::create_channel, channels::list_channels))
        .routes(routes!(channels::get_channel))
        .routes(routes!(channels::add_members))
        .routes(routes!(channels::remove_member))
        .routes(routes!(channels::upload_sender_keys))
        .routes(routes!(channels::send_group_message))
}

/// The OpenAPI document of the API, as `/openapi.json` serves it with the default
/// settings (`docs/openapi.json`).
pub fn openapi() -> serde_json::Value {
    openapi_for(&Settings::default())
}

/// The OpenAPI document as a server with `settings` serves it: the configurable limits
/// (envelope size, envelopes per message) are that server's.
pub fn openapi_for(settings: &Settings) -> serde_json::Value {
    crate::api_doc::finish(&api_router().split_for_parts().1, settings)
}

pub(crate) fn build(state: AppState) -> axum::Router {
    let (router, openapi) = api_router().split_for_parts();
    // Serialized once; every answer shares the bytes. (A handler capturing the document
    // itself copied all of it for each request.)
    let openapi = bytes::Bytes::from(
        serde_json::to_vec(&crate::api_doc::finish(&openapi, &state.settings)).unwrap_or_default(),
    );
    let router = router.route(
        "/openapi.json",
        get(move || {
            let openapi = openapi.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi,
                )
            }
        }),
    );
    finish(router, "public", state)
}

/// The private listener's routes: metrics, the probes and the admin API (docs/admin.md).
/// Never served on the public listener: metrics say how busy the server is, and the
/// admin API administers it.
pub(crate) fn build_admin(state: AppState) -> axum::Router {
    let router = crate::admin::router()
        .route("/metrics", get(metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    finish(router, "private", state)
}

/// What both listeners' routers end with: the fallbacks and the body limit answering in
/// the one error shape, panics answered as server errors, and a span per request naming
/// the listener and the matched route template (never the concrete URI: paths carry user
/// IDs).
fn finish(router: axum::Router<AppState>, listener: &'static str, state: AppState) -> axum::Router {
    let max_body_bytes = state.settings.max_body_bytes;
    router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            TraceLayer::new_for_http().make_span_with(move |request: &Request<_>| {
                let route = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("<unmatched>", |path| path.as_str())
                    .to_owned();
                tracing::info_span!("request", listener, method = %request.method(), route)
            }),
        )
        .with_state(state)
}

/// Prometheus counters (aggregate numbers only; see `metrics.rs`).
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// A panic in a handler is a bug: answer like any server error and keep serving.
fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal(anyhow::anyhow!("a request handler panicked")).into_response()
}
