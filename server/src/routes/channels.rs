//! Channels: create, read, change members, share sender keys, send group messages.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use courier_protocol::api::channels::{
    AddMembersRequest, Channel, CreateChannelRequest, SendGroupMessageRequest,
    UploadSenderKeysRequest, UploadSenderKeysResponse,
};
use courier_protocol::api::errors::{CountLimitDetails, DevicesDetails, UnknownUsersDetails};
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::SendMessageResponse;
use courier_protocol::{ErrorCode, UserId, limits};
use uuid::Uuid;

use super::messages::{answer, decode_ciphertext, decode_per_device};
use crate::api_doc::operation_errors;
use crate::auth::AuthenticatedDevice;
use crate::db;
use crate::db::channels::{NewSenderKey, Refusal};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::sends::GroupSend;
use crate::state::AppState;

fn channel_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::ChannelNotFound,
        "no such channel, or the caller is not a member",
    )
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::ChannelNotFound => channel_not_found(),
        Refusal::UsersNotFound(users) => ApiError::new(ErrorCode::UserNotFound, "no such user")
            .with_details(UnknownUsersDetails { user_ids: users }),
        Refusal::TooManyMembers(max) => ApiError::new(
            ErrorCode::TooManyMembers,
            format!("a channel has at most {max} members"),
        )
        .with_details(CountLimitDetails { max: max as u64 }),
        Refusal::NotAMember => ApiError::new(
            ErrorCode::NotAMember,
            "the user is not a member of this channel",
        ),
        Refusal::NotCreator => ApiError::new(
            ErrorCode::NotChannelCreator,
            "only the channel's creator removes other members",
        ),
        Refusal::NotMemberDevices(devices) => ApiError::new(
            ErrorCode::NotAMemberDevice,
            "sender keys are for current member devices (other than the sending one) only",
        )
        .with_details(DevicesDetails { devices }),
    }
}

/// A Megolm session ID: 1 to 64 characters of unpadded base64 (standard or URL-safe).
fn check_session_id(session_id: &str) -> Result<(), ApiError> {
    let valid = !session_id.is_empty()
        && session_id.len() <= limits::SESSION_ID_MAX_CHARS
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidSessionId,
            "a session ID is 1 to 64 characters of unpadded base64",
        ))
    }
}

/// Creates a channel; the caller's user is a member, and the creator. Every member device
/// gets a `membership` item (`created`).
#[utoipa::path(
    post, path = "/v1/channels", tag = super::tags::CHANNELS,
    security(("bearer" = [])),
    request_body = CreateChannelRequest,
    responses(
        (status = 201, body = Channel, description = "The channel was created"),
        CreateChannelErrors,
    ),
)]
pub async fn create_channel(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiJson(request): ApiJson<CreateChannelRequest>,
) -> Result<(StatusCode, Json<Channel>), ApiError> {
    // The caller is always a member: a request names at most the limit less one (the
    // document's maxItems), whether or not entries repeat.
    if request.members.len() > limits::MAX_CHANNEL_MEMBERS - 1 {
        return Err(refused(Refusal::TooManyMembers(
            limits::MAX_CHANNEL_MEMBERS,
        )));
    }
    let changed = db::channels::create(
        &state.pool,
        caller.device(),
        &request.members,
        limits::MAX_CHANNEL_MEMBERS,
    )
    .await?
    .map_err(refused)?;
    crate::delivery::deliver(&state.hub, &state.fabric, changed.items);
    Ok((StatusCode::CREATED, Json(changed.value)))
}

/// The channels the caller's user is a member of.
#[utoipa::path(
    get, path = "/v1/channels", tag = super::tags::CHANNELS,
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<Channel>, description = "The caller's channels"),
        ListChannelsErrors,
    ),
)]
pub async fn list_channels(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
) -> Result<Json<Vec<Channel>>, ApiError> {
    Ok(Json(db::channels::list(&state.pool, caller.user_id).await?))
}

/// A channel: its members and the member devices a group message must reach.
#[utoipa::path(
    get, path = "/v1/channels/{channelId}", tag = super::tags::CHANNELS,
    security(("bearer" = [])),
    params(("channelId" = Uuid, Path, description = "The channel")),
    responses(
        (status = 200, body = Channel, description = "The channel"),
        GetChannelErrors,
    ),
)]
pub async fn get_channel(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(channel_id): ApiPath<Uuid>,
) -> Result<Json<Channel>, ApiError> {
    db::channels::get(&state.pool, caller.user_id, channel_id)
        .await?
        .map(Json)
        .ok_or_else(channel_not_found)
}

/// Adds members (any member may); members already are skipped. Every member device,
/// the new ones' included, gets a `membership` item (`added`). Answers the channel.
#[utoipa::path(
    post, path = "/v1/channels/{channelId}/members", tag = super::tags::CHANNELS,
    security(("bearer" = [])),
    params(("channelId" = Uuid, Path, description = "The channel")),
    request_body = AddMembersRequest,
    responses(
        (status = 200, body = Channel, description = "The channel with its members now"),
        AddMembersErrors,
    ),
)]
pub async fn add_members(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(channel_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<AddMembersRequest>,
) -> Result<Json<Channel>, ApiError> {
    // A channel has at least one member (the caller), so a request adds at most the limit
    // less one (the document's maxItems).
    if request.user_ids.len() > limits::MAX_CHANNEL_MEMBERS - 1 {
        return Err(refused(Refusal::TooManyMembers(
            limits::MAX_CHANNEL_MEMBERS,
        )));
    }
    let changed = db::channels::add_members(
        &state.pool,
        caller.device(),
        channel_id,
        &request.user_ids,
        limits::MAX_CHANNEL_MEMBERS,
    )
    .await?
    .map_err(refused)?;
    crate::delivery::deliver(&state.hub, &state.fabric, changed.items);
    get_channel(State(state), caller, ApiPath(channel_id)).await
}

/// Removes a member: any member may leave; only the creator removes others. The
/// remaining members' devices and the removed user's get a `membership` item
/// (`removed`). Senders rotate their sessions, so the removed user reads nothing later.
#[utoipa::path(
    delete, path = "/v1/channels/{channelId}/members/{userId}", tag = super::tags::CHANNELS,
    security(("bearer" = [])),
    params(
        ("channelId" = Uuid, Path, description = "The channel"),
        ("userId" = Uuid, Path, description = "The member to remove (the caller's own ID to leave)"),
    ),
    responses(
        (status = 204, description = "Removed"),
        RemoveMemberErrors,
    ),
)]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath((channel_id, user_id)): ApiPath<(Uuid, UserId)>,
) -> Result<StatusCode, ApiError> {
    let changed = db::channels::remove_member(&state.pool, caller.device(), channel_id, user_id)
        .await?
        .map_err(refused)?;
    crate::delivery::deliver(&state.hub, &state.fabric, changed.items);
    Ok(StatusCode::NO_CONTENT)
}

/// Shares the calling device's Megolm session with member devices: one Olm-encrypted copy
/// per device, each delivered in that device's stream (`senderKey` item). A device given
/// this session before keeps its first copy.
#[utoipa::path(
    post, path = "/v1/channels/{channelId}/sender-keys", tag = super::tags::CHANNELS,
    security(("bearer" = [])),
    params(("channelId" = Uuid, Path, description = "The channel")),
    request_body = UploadSenderKeysRequest,
    responses(
        (status = 200, body = UploadSenderKeysResponse, description = "Stored: how many distributions were new"),
        UploadSenderKeysErrors,
    ),
)]
pub async fn upload_sender_keys(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(channel_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<UploadSenderKeysRequest>,
) -> Result<Json<UploadSenderKeysResponse>, ApiError> {
    check_session_id(&request.session_id)?;
    let items = request.distributions.iter().map(|key| {
        let device = DeviceRef {
            user_id: key.user_id,
            device_id: key.device_id,
        };
        (device, key.envelope_type, key.ciphertext.as_str())
    });
    let keys: Vec<NewSenderKey> = decode_per_device(&state, "distributions", items)?
        .into_iter()
        .map(|(device, envelope_type, ciphertext)| NewSenderKey {
            device,
            envelope_type,
            ciphertext,
        })
        .collect();
    let changed = db::channels::store_sender_keys(
        &state.pool,
        caller.device(),
        channel_id,
        &request.session_id,
        &keys,
    )
    .await?
    .map_err(refused)?;
    crate::delivery::deliver(&state.hub, &state.fabric, changed.items);
    Ok(Json(UploadSenderKeysResponse {
        stored: changed.value,
    }))
}

/// Sends a group message: stored once, one stream row per member device but the sending
/// one. Refused with `missing_sender_keys` while any of those devices has no sender key
/// of the session from the sending device. The same client message ID from the same
/// device answers the original.
#[utoipa::path(
    post, path = "/v1/channels/{channelId}/messages", tag = super::tags::CHANNELS,
    security(("bearer" = [])),
    params(("channelId" = Uuid, Path, description = "The channel")),
    request_body = SendGroupMessageRequest,
    responses(
        (status = 201, body = SendMessageResponse, description = "Stored (committed durably) and pushed to online member devices"),
        (status = 200, body = SendMessageResponse, description = "A retry: the original answer; nothing new stored"),
        SendGroupMessageErrors,
    ),
)]
pub async fn send_group_message(
    State(state): State<AppState>,
    caller: AuthenticatedDevice,
    ApiPath(channel_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<SendGroupMessageRequest>,
) -> Result<(StatusCode, Json<SendMessageResponse>), ApiError> {
    state.rate_limits.check_send(caller.device())?;
    if !limits::check_client_message_id(&request.client_message_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidClientMessageId,
            "a client message ID is 1 to 64 characters of [A-Za-z0-9_-]",
        ));
    }
    check_session_id(&request.session_id)?;
    let ciphertext = decode_ciphertext(&state, "ciphertext", &request.ciphertext)?;
    let sent = state
        .sends
        .send_group(GroupSend {
            sender: caller.device(),
            client_message_id: request.client_message_id,
            channel_id,
            session_id: request.session_id,
            ciphertext,
        })
        .await?;
    Ok(answer(&sent))
}

operation_errors!(
    /// The errors of [`create_channel`].
    CreateChannelErrors: AUTH + JSON_BODY + DATABASE + [TooManyMembers, UserNotFound]
);
operation_errors!(
    /// The errors of [`list_channels`].
    ListChannelsErrors: AUTH + DATABASE + []
);
operation_errors!(
    /// The errors of [`get_channel`].
    GetChannelErrors: AUTH + DATABASE + [InvalidPathParameter, ChannelNotFound]
);
operation_errors!(
    /// The errors of [`add_members`].
    AddMembersErrors: AUTH + JSON_BODY + DATABASE + [InvalidPathParameter, TooManyMembers, ChannelNotFound, UserNotFound]
);
operation_errors!(
    /// The errors of [`remove_member`].
    RemoveMemberErrors: AUTH + DATABASE + [InvalidPathParameter, NotChannelCreator, ChannelNotFound, NotAMember]
);
operation_errors!(
    /// The errors of [`upload_sender_keys`].
    UploadSenderKeysErrors: AUTH + JSON_BODY + DATABASE + [InvalidPathParameter, InvalidSessionId, InvalidBase64, InvalidEnvelope, DuplicateEnvelope, TooManyEnvelopes, ChannelNotFound, NotAMemberDevice, EnvelopeTooLarge]
);
operation_errors!(
    /// The errors of [`send_group_message`].
    SendGroupMessageErrors: AUTH + JSON_BODY + DATABASE + [InvalidPathParameter, InvalidClientMessageId, InvalidSessionId, InvalidBase64, InvalidEnvelope, ChannelNotFound, MissingSenderKeys, RecipientUnreachable, ClientMessageIdReused, EnvelopeTooLarge, RateLimited]
);
