//! The inbox over REST (clients that cannot hold a socket, and backfill) and the
//! WebSocket upgrade.

use axum::Json;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::response::Response;
use courier_protocol::ErrorCode;
use courier_protocol::api::errors::FieldLimitDetails;
use courier_protocol::api::messages::{AckRequest, AckResponse};
use courier_protocol::api::stream::{InboxPage, StreamItem, client_seq};
use courier_protocol::limits::{
    DEFAULT_INBOX_PAGE_ITEMS as DEFAULT_PAGE, MAX_INBOX_PAGE_ITEMS as MAX_PAGE,
};
use serde::Deserialize;

use crate::api_doc::operation_errors;
use crate::auth::AuthenticatedDevice;
use crate::db;
use crate::db::stream::AckRange;
use crate::delivery::connection;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::metrics::Metrics;
use crate::rate_limits::ClientAddress;
use crate::serve::ConnectionShared;
use crate::state::AppState;

/// Most ciphertext (and event body) bytes in one inbox page: past it the page ends early,
/// with `hasMore`, so a page of large envelopes stays about 1.4 MiB of JSON.
const INBOX_PAGE_BYTES: i64 = 1024 * 1024;
/// Largest WebSocket message a client may send (acks are small).
const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;

/// Inbox paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct InboxQuery {
    /// Items after this sequence number (default 0: from the start).
    // Its range is set in the document from `MAX_SEQ` (api_doc::limits).
    #[serde(default, deserialize_with = "client_seq::deserialize")]
    after: u64,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// Lists the calling device's undelivered stream items after a cursor, in order.
#[utoipa::path(
    get, path = "/v1/inbox", tag = super::tags::MESSAGES,
    security(("bearer" = [])),
    params(InboxQuery),
    responses(
        (status = 200, body = InboxPage, description = "A page of undelivered items"),
        ListInboxErrors,
    ),
)]
pub async fn list_inbox(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiQuery(query): ApiQuery<InboxQuery>,
) -> Result<Json<InboxPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQueryParameter,
            format!("limit is 1 to {MAX_PAGE}"),
        )
        .with_details(FieldLimitDetails {
            field: "limit".to_owned(),
            max: u64::from(MAX_PAGE),
        }));
    }
    // One more than asked tells whether another page follows.
    let page = db::stream::undelivered_after(
        &state.pool,
        caller.user_id,
        caller.device_id,
        query.after,
        i64::from(limit) + 1,
        INBOX_PAGE_BYTES,
    )
    .await?;
    let mut items = page.items;
    let has_more = page.cut_by_bytes || items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = items.last().map_or(query.after, StreamItem::seq);
    Ok(Json(InboxPage {
        items,
        next_cursor,
        has_more,
    }))
}

/// Marks the calling device's stream delivered up to a sequence number (cumulative).
#[utoipa::path(
    post, path = "/v1/inbox/ack", tag = super::tags::MESSAGES,
    security(("bearer" = [])),
    request_body = AckRequest,
    responses(
        (status = 200, body = AckResponse, description = "Acknowledged (written before this answer)"),
        AckInboxErrors,
    ),
)]
pub async fn ack_inbox(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let device = caller.device();
    let acked =
        db::stream::mark_delivered(&state.pool, &[(device, request.up_to)], AckRange::UpTo).await?;
    Metrics::add(&state.metrics.envelopes_delivered, acked.envelopes);
    let delivered = acked.envelopes;
    crate::delivery::deliver(&state.hub, &state.fabric, acked.receipts);
    Ok(Json(AckResponse { delivered }))
}

/// WebSocket query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct SocketQuery {
    /// The device has stored everything up to this sequence number: an implicit
    /// acknowledgement; the socket starts after it.
    #[serde(default, deserialize_with = "client_seq::option")]
    after: Option<u64>,
}

/// Opens the calling device's stream as a WebSocket (token in the `Authorization`
/// header). Server frames: stream items (`{"type": "envelope", "seq", ...}`), then
/// `{"type": "caughtUp", "cursor"}` once the backlog is out. Client frames:
/// `{"type": "ack", "upTo": n}` or `{"type": "ack", "seqs": [...]}`; a frame the server
/// cannot use is answered `{"type": "error", "code": "invalid_frame"}`. Close codes: 4001
/// replaced by a newer connection, 4002 idle timeout, 4003 device removed, 4004 too slow,
/// 4005 token revoked, 1001 server shutting down, 1011 server error.
#[utoipa::path(
    get, path = "/v1/ws", tag = super::tags::MESSAGES,
    security(("bearer" = [])),
    params(SocketQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        OpenSocketErrors,
    ),
)]
pub async fn open_socket(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    caller: AuthenticatedDevice,
    ApiQuery(query): ApiQuery<SocketQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    transport: Option<Extension<Arc<ConnectionShared>>>,
) -> Result<Response, ApiError> {
    let transport = transport.map(|Extension(shared)| shared);
    let upgrade = upgrade
        .map_err(|rejection| ApiError::new(ErrorCode::NotWebSocket, rejection.body_text()))?;
    state.rate_limits.check_socket(address, caller.device())?;
    Ok(upgrade
        // Small buffers: an idle device costs a few KiB, so one process holds many.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |socket| {
            connection::run(
                socket,
                state.connection_context(),
                caller.device(),
                caller.token,
                query.after,
                transport,
            )
        }))
}

operation_errors!(
    /// The errors of [`list_inbox`].
    ListInboxErrors: AUTH + DATABASE + [InvalidQueryParameter]
);
operation_errors!(
    /// The errors of [`ack_inbox`].
    AckInboxErrors: AUTH + JSON_BODY + DATABASE + []
);
operation_errors!(
    /// The errors of [`open_socket`].
    OpenSocketErrors: AUTH + DATABASE + [InvalidQueryParameter, NotWebSocket, RateLimited]
);
