//! Sending messages (V1 and V2), reading one envelope, marking one delivered.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use courier_protocol::api::errors::{
    CountLimitDetails, FieldDetails, FieldLimitDetails, SupportedVersionsDetails,
};
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::{
    DeviceEnvelope, EnvelopeType, PROTOCOL_VERSIONS, SendMessageRequest, SendMessageResponse,
};
use courier_protocol::api::stream::Envelope;
use courier_protocol::keys::{KeyDecodeError, decode_base64, max_base64_len};
use courier_protocol::{DeviceId, ErrorCode, limits};
use serde::Deserialize;
use uuid::Uuid;

use crate::api_doc::operation_errors;
use crate::auth::AuthenticatedDevice;
use crate::db;
use crate::db::messages::NewEnvelope;
use crate::db::stream::EnvelopeLookup;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::metrics::Metrics;
use crate::sends::{DirectContent, DirectSend, Sent};
use crate::state::AppState;

/// Decodes an envelope's ciphertext and checks it against the size limit.
pub(crate) fn decode_ciphertext(
    state: &AppState,
    field: &str,
    text: &str,
) -> Result<Vec<u8>, ApiError> {
    let max = state.settings.max_envelope_bytes;
    // Checked before decoding, so an oversized envelope costs no allocation (and text
    // longer than the document's maxLength is refused as too large, not as bad base64).
    if text.len() > max_base64_len(max) {
        return Err(envelope_too_large(field, max));
    }
    let bytes = decode_base64(text).map_err(|_: KeyDecodeError| {
        ApiError::new(
            ErrorCode::InvalidBase64,
            format!("{field} is not valid base64"),
        )
        .with_details(FieldDetails {
            field: field.to_owned(),
        })
    })?;
    if bytes.len() > max {
        return Err(envelope_too_large(field, max));
    }
    if bytes.is_empty() {
        return Err(
            ApiError::new(ErrorCode::InvalidEnvelope, format!("{field} is empty")).with_details(
                FieldDetails {
                    field: field.to_owned(),
                },
            ),
        );
    }
    Ok(bytes)
}

fn envelope_too_large(field: &str, max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::EnvelopeTooLarge,
        format!("{field} is larger than {max} bytes"),
    )
    .with_details(FieldLimitDetails {
        field: field.to_owned(),
        max: max as u64,
    })
}

/// Sends a message. V2: one envelope per reachable device of the recipient and of the
/// sender (less the sending device), all or nothing. V1: one ciphertext for every device
/// of the recipient. The same client message ID from the same device answers the
/// original result and stores nothing.
#[utoipa::path(
    post, path = "/v1/messages", tag = super::tags::MESSAGES,
    security(("bearer" = [])),
    request_body = SendMessageRequest,
    responses(
        (status = 201, body = SendMessageResponse, description = "Stored (committed durably) and pushed to online devices"),
        (status = 200, body = SendMessageResponse, description = "A retry: the original answer; nothing new stored"),
        SendMessageErrors,
    ),
)]
pub async fn send_message(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<SendMessageRequest>,
) -> Result<(StatusCode, Json<SendMessageResponse>), ApiError> {
    state.rate_limits.check_send(caller.device())?;
    if !limits::check_client_message_id(&request.client_message_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidClientMessageId,
            "a client message ID is 1 to 64 characters of [A-Za-z0-9_-]",
        ));
    }
    enum Version<'a> {
        V1(&'a str),
        V2(&'a [DeviceEnvelope]),
    }
    let version = match (
        request.protocol_version,
        &request.device_envelopes,
        &request.encrypted_envelope,
    ) {
        (Some(2) | None, Some(envelopes), None) => Version::V2(envelopes),
        (Some(1) | None, None, Some(envelope)) => Version::V1(envelope),
        (Some(version), _, _) if version != 1 && version != 2 => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedProtocolVersion,
                format!("protocol version {version} is not supported"),
            )
            .with_details(SupportedVersionsDetails {
                supported: PROTOCOL_VERSIONS.to_vec(),
            }));
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequestBody,
                "a V2 message carries deviceEnvelopes, a V1 message encryptedEnvelope, never both",
            ));
        }
    };

    // Every envelope is decoded and checked before the database is asked anything.
    let content = match version {
        Version::V2(envelopes) => DirectContent::PerDevice(decode_v2(&state, envelopes)?),
        Version::V1(envelope) => {
            DirectContent::Legacy(decode_ciphertext(&state, "encryptedEnvelope", envelope)?)
        }
    };
    let sent = state
        .sends
        .send_direct(DirectSend {
            sender: caller.device(),
            client_message_id: request.client_message_id,
            recipient: request.recipient_user_id,
            content,
        })
        .await?;
    Ok(answer(&sent))
}

/// The answer to a send: `201` for a new message, `200` with the original for a retry.
pub(crate) fn answer(sent: &Sent) -> (StatusCode, Json<SendMessageResponse>) {
    let (status, message) = match sent {
        Sent::New(message) => (StatusCode::CREATED, message),
        Sent::Retry(message) => (StatusCode::OK, message),
    };
    (
        status,
        Json(SendMessageResponse {
            message_id: message.message_id,
            server_timestamp: message.created_at,
            envelope_count: message.envelope_count,
        }),
    )
}

/// Decodes and checks V2 envelopes: count, one per device, type, size.
fn decode_v2(state: &AppState, envelopes: &[DeviceEnvelope]) -> Result<Vec<NewEnvelope>, ApiError> {
    let items = envelopes.iter().map(|e| {
        let device = DeviceRef {
            user_id: e.user_id,
            device_id: e.device_id,
        };
        (device, e.envelope_type, e.ciphertext.as_str())
    });
    Ok(decode_per_device(state, "deviceEnvelopes", items)?
        .into_iter()
        .map(|(device, envelope_type, ciphertext)| NewEnvelope {
            device,
            envelope_type,
            ciphertext: Some(ciphertext),
        })
        .collect())
}

/// Checks a request's per-device Olm ciphertexts (V2 envelopes, sender keys), all before
/// the database is asked anything: at most the envelopes-per-message limit, one per
/// device, an Olm type (`preKey` or `normal`), a size within the limit. `field` names the
/// request's list in error details.
pub(crate) fn decode_per_device<'a>(
    state: &AppState,
    field: &str,
    items: impl ExactSizeIterator<Item = (DeviceRef, EnvelopeType, &'a str)>,
) -> Result<Vec<(DeviceRef, EnvelopeType, Vec<u8>)>, ApiError> {
    let max = state.settings.max_envelopes_per_message;
    if items.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooManyEnvelopes,
            format!("{field} carries at most {max} entries"),
        )
        .with_details(CountLimitDetails { max: max as u64 }));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut decoded = Vec::with_capacity(items.len());
    for (index, (device, envelope_type, ciphertext)) in items.enumerate() {
        if !seen.insert(device) {
            return Err(ApiError::new(
                ErrorCode::DuplicateEnvelope,
                format!("{field} has two entries for one device"),
            )
            .with_details(device));
        }
        if envelope_type == EnvelopeType::Legacy {
            return Err(ApiError::new(
                ErrorCode::InvalidEnvelope,
                "a per-device ciphertext is an Olm preKey or normal message",
            )
            .with_details(FieldDetails {
                field: format!("{field}[{index}].envelopeType"),
            }));
        }
        let bytes = decode_ciphertext(state, &format!("{field}[{index}].ciphertext"), ciphertext)?;
        decoded.push((device, envelope_type, bytes));
    }
    Ok(decoded)
}

/// Optional device ID in envelope queries (V1 clients omit it).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeQuery {
    /// The calling device's ID. Omitted (V1 clients), it is the token's device; any other
    /// device's ID answers 404.
    device_id: Option<DeviceId>,
}

fn check_own_device(
    caller: AuthenticatedDevice,
    device_id: Option<DeviceId>,
) -> Result<(), ApiError> {
    match device_id {
        Some(id) if id != caller.device_id => Err(not_found()),
        _ => Ok(()),
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::MessageNotFound,
        "no such message for this device",
    )
}

/// The calling device's envelope of one message (while it is undelivered).
#[utoipa::path(
    get, path = "/v1/messages/{messageId}/envelope", tag = super::tags::MESSAGES,
    security(("bearer" = [])),
    params(("messageId" = Uuid, Path, description = "The message"), EnvelopeQuery),
    responses(
        (status = 200, body = Envelope, description = "The undelivered envelope"),
        GetEnvelopeErrors,
    ),
)]
pub async fn get_envelope(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(message_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<EnvelopeQuery>,
) -> Result<Json<Envelope>, ApiError> {
    check_own_device(caller, query.device_id)?;
    match db::stream::envelope_for_message(
        &state.pool,
        caller.user_id,
        caller.device_id,
        message_id,
    )
    .await?
    {
        EnvelopeLookup::Pending(envelope) => Ok(Json(envelope)),
        EnvelopeLookup::Delivered => Err(ApiError::new(
            ErrorCode::EnvelopeDelivered,
            "this envelope was delivered and its ciphertext purged",
        )),
        EnvelopeLookup::NotFound => Err(not_found()),
    }
}

/// Marks the calling device's envelope of one message delivered (idempotent).
#[utoipa::path(
    post, path = "/v1/messages/{messageId}/delivered", tag = super::tags::MESSAGES,
    security(("bearer" = [])),
    params(("messageId" = Uuid, Path, description = "The message"), EnvelopeQuery),
    responses(
        (status = 204, description = "Delivered (now or before)"),
        MarkDeliveredErrors,
    ),
)]
pub async fn mark_delivered(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(message_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<EnvelopeQuery>,
) -> Result<StatusCode, ApiError> {
    check_own_device(caller, query.device_id)?;
    match db::stream::mark_message_delivered(
        &state.pool,
        caller.user_id,
        caller.device_id,
        message_id,
    )
    .await?
    {
        None => Err(not_found()),
        Some(acked) => {
            Metrics::add(&state.metrics.envelopes_delivered, acked.envelopes);
            crate::delivery::deliver(&state.hub, &state.fabric, acked.receipts);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

operation_errors!(
    /// The errors of [`send_message`].
    SendMessageErrors: AUTH + JSON_BODY + DATABASE + [InvalidClientMessageId, UnsupportedProtocolVersion, InvalidBase64, InvalidEnvelope, DuplicateEnvelope, TooManyEnvelopes, UserNotFound, DeviceListMismatch, RecipientUnreachable, ClientMessageIdReused, EnvelopeTooLarge, RateLimited]
);
operation_errors!(
    /// The errors of [`get_envelope`].
    GetEnvelopeErrors: AUTH + DATABASE + [InvalidPathParameter, InvalidQueryParameter, MessageNotFound, EnvelopeDelivered]
);
operation_errors!(
    /// The errors of [`mark_delivered`].
    MarkDeliveredErrors: AUTH + DATABASE + [InvalidPathParameter, InvalidQueryParameter, MessageNotFound]
);
