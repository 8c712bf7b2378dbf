//! The typed HTTP client: one method per endpoint the SDK uses (see docs/api.md).

use std::fmt;
use std::time::Duration;

use courier_protocol::api::accounts::{
    CreateAccountRequest, CreateAccountResponse, DeleteAccountRequest, LoginRequest, LoginResponse,
};
use courier_protocol::api::channels::{
    AddMembersRequest, Channel, CreateChannelRequest, MissingSenderKeys, SendGroupMessageRequest,
    UploadSenderKeysRequest, UploadSenderKeysResponse,
};
use courier_protocol::api::devices::OwnDevicesResponse;
use courier_protocol::api::keys::{
    ClaimKeysRequest, ClaimKeysResponse, DirectoryDevice, IdentityKeys, KeyCountResponse,
    SignedKey, UploadOneTimeKeysRequest, UserDevicesResponse,
};
use courier_protocol::api::messages::{
    AckRequest, AckResponse, DeviceListMismatch, SendMessageRequest, SendMessageResponse,
};
use courier_protocol::api::receipts::{
    DeliveryState, MarkReadRequest, MarkReadResponse, PrivacySettings, UpdatePrivacySettings,
};
use courier_protocol::api::stream::{Envelope, InboxPage, StreamItem};
use courier_protocol::{DeviceId, ErrorCode, UserId};
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, RequestBuilder, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;
use uuid::Uuid;

use super::error::TransportError;
use super::socket::StreamConnection;
use super::token::AccessToken;

/// Largest success body read. An inbox page of 1,000 envelopes of 64 KiB is ~90 MiB;
/// anything past this is not an answer this API gives, and is not buffered.
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;
/// Largest error body read (error bodies are a few hundred bytes; a device list at most a
/// few KiB).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Most memory reserved up front for a body, whatever length it announces.
const INITIAL_BODY_CAPACITY: usize = 1024 * 1024;

/// A typed client for Courier's HTTP API.
///
/// Cheap to clone (clones share one connection pool). Calls that need a device's access
/// token fail with [`TransportError::MissingToken`] until one is set; login does not set
/// it by itself, so the app can store the token first.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: Url,
    token: Option<AccessToken>,
}

/// A logged-in device: who it is and the token it authenticates with.
#[derive(Debug, Clone)]
pub struct DeviceLogin {
    /// The user's ID.
    pub user_id: UserId,
    /// The device's ID (assigned by the server for a new device).
    pub device_id: DeviceId,
    /// The device's access token (shown once by the server: store it).
    pub access_token: AccessToken,
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored (or a retry of a message stored before, with the original answer).
    Sent(SendMessageResponse),
    /// Refused because the envelopes do not match the current device lists; nothing was
    /// stored. Refresh the listed devices, fix the envelope set and send again (with the
    /// same client message ID).
    DeviceListMismatch(DeviceListMismatch),
}

/// What became of a group send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSendOutcome {
    /// Stored (or a retry of a message stored before, with the original answer).
    Sent(SendMessageResponse),
    /// Refused: these member devices have no sender key of the session; nothing was
    /// stored. Share the session with them and send again.
    MissingSenderKeys(MissingSenderKeys),
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.base_url.as_str())
            // AccessToken's Debug is redacted.
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// How long opening a connection (TCP and TLS) may take.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a whole request, answer body included, may take.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// A client for the server at `base_url` (`https://…` in production, `http://…` for a
    /// local server; a path prefix is kept: `https://host/courier` serves
    /// `https://host/courier/v1/…`).
    pub fn new(base_url: Url) -> Result<Self, TransportError> {
        let base_url = checked_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Self::CONNECT_TIMEOUT)
            .timeout(Self::REQUEST_TIMEOUT)
            // The API never redirects; following one could carry a request elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("courier-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| TransportError::ClientSetup(Box::new(error)))?;
        Ok(Self {
            http,
            base_url,
            token: None,
        })
    }

    /// This client, authenticating as the device `token` belongs to.
    pub fn with_token(mut self, token: AccessToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Authenticates later calls with `token`.
    pub fn set_token(&mut self, token: AccessToken) {
        self.token = Some(token);
    }

    /// Forgets the token (after logging out or removing this device).
    pub fn clear_token(&mut self) {
        self.token = None;
    }

    /// The token calls authenticate with, if any.
    pub fn token(&self) -> Option<&AccessToken> {
        self.token.as_ref()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `POST /v1/accounts`: creates an account. A server that takes new accounts by
    /// registration token only refuses one without a valid `registration_token` with
    /// `403 invalid_registration_token`; a closed server refuses all with
    /// `403 registration_closed`.
    pub async fn create_account(
        &self,
        request: &CreateAccountRequest,
    ) -> Result<CreateAccountResponse, TransportError> {
        let url = self.url(&["v1", "accounts"])?;
        self.call_json(self.http.post(url).json(request)).await
    }

    /// `DELETE /v1/accounts/me`: deletes the caller's account, confirmed with its
    /// password (`204`). Every device of the user is removed (their tokens answer
    /// `device_removed`, their streams close), their keys and pending envelopes are
    /// deleted, and the username stays reserved. A wrong password is refused with
    /// `403 wrong_password` and changes nothing.
    pub async fn delete_account(&self, password: &str) -> Result<(), TransportError> {
        let url = self.url(&["v1", "accounts", "me"])?;
        self.call_empty(
            self.authorized(Method::DELETE, url)?
                .json(&DeleteAccountRequest {
                    password: password.to_owned(),
                }),
        )
        .await
    }

    /// `POST /v1/login`: logs in as a new device (`deviceId: 0`, the server assigns the
    /// ID) or again as an existing one. At the device limit this fails with
    /// `device_limit_reached`, whose [`device_limit_details`] list the user's devices.
    ///
    /// [`device_limit_details`]: TransportError::device_limit_details
    pub async fn login(&self, request: &LoginRequest) -> Result<DeviceLogin, TransportError> {
        let url = self.url(&["v1", "login"])?;
        let login: LoginResponse = self.call_json(self.http.post(url).json(request)).await?;
        Ok(DeviceLogin {
            user_id: login.user_id,
            device_id: login.device_id,
            access_token: AccessToken::new(login.access_token),
        })
    }

    /// `GET /v1/devices`: the caller's active devices and the device limit.
    pub async fn list_own_devices(&self) -> Result<OwnDevicesResponse, TransportError> {
        let url = self.url(&["v1", "devices"])?;
        self.call_json(self.authorized(Method::GET, url)?).await
    }

    /// `DELETE /v1/devices/{deviceId}`: removes one of the user's devices (this one
    /// included). Its token stops working and its stream closes.
    pub async fn remove_device(&self, device_id: DeviceId) -> Result<(), TransportError> {
        let url = self.url(&["v1", "devices", &device_id.to_string()])?;
        self.call_empty(self.authorized(Method::DELETE, url)?).await
    }

    /// `PUT /v1/keys/identity`: publishes this device's identity keys (answers the same
    /// whether they are new or were published before with the same keys).
    pub async fn publish_identity_keys(
        &self,
        keys: &IdentityKeys,
    ) -> Result<DirectoryDevice, TransportError> {
        let url = self.url(&["v1", "keys", "identity"])?;
        self.call_json(self.authorized(Method::PUT, url)?.json(keys))
            .await
    }

    /// `POST /v1/keys/one-time`: uploads signed one-time keys (at most
    /// [`MAX_ONE_TIME_KEYS_PER_UPLOAD`](courier_protocol::limits::MAX_ONE_TIME_KEYS_PER_UPLOAD)).
    pub async fn upload_one_time_keys(
        &self,
        request: &UploadOneTimeKeysRequest,
    ) -> Result<KeyCountResponse, TransportError> {
        let url = self.url(&["v1", "keys", "one-time"])?;
        self.call_json(self.authorized(Method::POST, url)?.json(request))
            .await
    }

    /// `PUT /v1/keys/fallback`: replaces this device's fallback key.
    pub async fn set_fallback_key(
        &self,
        key: &SignedKey,
    ) -> Result<KeyCountResponse, TransportError> {
        let url = self.url(&["v1", "keys", "fallback"])?;
        self.call_json(self.authorized(Method::PUT, url)?.json(key))
            .await
    }

    /// `GET /v1/keys/count`: this device's unclaimed one-time keys and fallback key.
    pub async fn key_count(&self) -> Result<KeyCountResponse, TransportError> {
        let url = self.url(&["v1", "keys", "count"])?;
        self.call_json(self.authorized(Method::GET, url)?).await
    }

    /// `GET /v1/keys/devices/{userId}`: a user's reachable devices and their identity
    /// keys (unverified: the caller checks each self-signature).
    pub async fn user_devices(
        &self,
        user_id: UserId,
    ) -> Result<UserDevicesResponse, TransportError> {
        let url = self.url(&["v1", "keys", "devices", &user_id.to_string()])?;
        self.call_json(self.authorized(Method::GET, url)?).await
    }

    /// `POST /v1/keys/claim`: claims one key per device (unverified: the caller checks
    /// each signature).
    pub async fn claim_keys(
        &self,
        request: &ClaimKeysRequest,
    ) -> Result<ClaimKeysResponse, TransportError> {
        let url = self.url(&["v1", "keys", "claim"])?;
        self.call_json(self.authorized(Method::POST, url)?.json(request))
            .await
    }

    /// `POST /v1/messages`: sends a message. A refusal for an envelope set that does not
    /// match the device lists is an outcome, not an error. Sending the same request
    /// again (same client message ID) is safe: the server answers the original result.
    pub async fn send_message(
        &self,
        request: &SendMessageRequest,
    ) -> Result<SendOutcome, TransportError> {
        let url = self.url(&["v1", "messages"])?;
        match self
            .call_json(self.authorized(Method::POST, url)?.json(request))
            .await
        {
            Ok(sent) => Ok(SendOutcome::Sent(sent)),
            Err(TransportError::Api {
                status,
                code: ErrorCode::DeviceListMismatch,
                details,
                ..
            }) => details
                .and_then(|details| serde_json::from_value(details).ok())
                .map(SendOutcome::DeviceListMismatch)
                .ok_or_else(|| TransportError::UnexpectedResponse {
                    status,
                    problem: "device_list_mismatch without missing/extra/stale details".into(),
                }),
            Err(error) => Err(error),
        }
    }

    /// `GET /v1/inbox`: this device's undelivered stream items after `after`, in order;
    /// `limit` 1 to 1,000 (the server's default, 100, when `None`). Items of a type this
    /// SDK does not know (a newer server) are left out of the page; its `next_cursor`
    /// still covers them, so acknowledging up to it skips them instead of stalling.
    pub async fn inbox(&self, after: u64, limit: Option<u32>) -> Result<InboxPage, TransportError> {
        let mut url = self.url(&["v1", "inbox"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("after", &after.to_string());
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
        }
        let page: ArrivedInboxPage = self.call_json(self.authorized(Method::GET, url)?).await?;
        page.known_items()
    }

    /// `POST /v1/inbox/ack`: marks everything up to `up_to` delivered (only after it is
    /// stored). Answers how many items were newly marked.
    pub async fn ack_inbox(&self, up_to: u64) -> Result<AckResponse, TransportError> {
        let url = self.url(&["v1", "inbox", "ack"])?;
        self.call_json(
            self.authorized(Method::POST, url)?
                .json(&AckRequest { up_to }),
        )
        .await
    }

    /// `GET /v1/messages/{messageId}/envelope`: this device's envelope of one message
    /// (`message_not_found` for any other's, `envelope_delivered` once delivered).
    pub async fn get_envelope(&self, message_id: Uuid) -> Result<Envelope, TransportError> {
        let url = self.url(&["v1", "messages", &message_id.to_string(), "envelope"])?;
        self.call_json(self.authorized(Method::GET, url)?).await
    }

    /// `POST /v1/messages/{messageId}/delivered`: marks this device's envelope of one
    /// message delivered (idempotent).
    pub async fn mark_delivered(&self, message_id: Uuid) -> Result<(), TransportError> {
        let url = self.url(&["v1", "messages", &message_id.to_string(), "delivered"])?;
        self.call_empty(self.authorized(Method::POST, url)?).await
    }

    /// `POST /v1/receipts/read`: marks a message read, or everything up to it in its
    /// conversation (`up_to`).
    pub async fn mark_read(
        &self,
        message_id: Uuid,
        up_to: bool,
    ) -> Result<MarkReadResponse, TransportError> {
        let url = self.url(&["v1", "receipts", "read"])?;
        self.call_json(
            self.authorized(Method::POST, url)?
                .json(&MarkReadRequest { message_id, up_to }),
        )
        .await
    }

    /// `GET /v1/messages/{messageId}/delivery`: a message's delivery state (its sender's
    /// user only).
    pub async fn delivery_state(&self, message_id: Uuid) -> Result<DeliveryState, TransportError> {
        let url = self.url(&["v1", "messages", &message_id.to_string(), "delivery"])?;
        self.call_json(self.authorized(Method::GET, url)?).await
    }

    /// `GET /v1/settings/privacy`: the user's read-receipt settings.
    pub async fn privacy_settings(&self) -> Result<PrivacySettings, TransportError> {
        let url = self.url(&["v1", "settings", "privacy"])?;
        self.call_json(self.authorized(Method::GET, url)?).await
    }

    /// `PUT /v1/settings/privacy`: changes the user's read-receipt settings.
    pub async fn update_privacy_settings(
        &self,
        update: &UpdatePrivacySettings,
    ) -> Result<PrivacySettings, TransportError> {
        let url = self.url(&["v1", "settings", "privacy"])?;
        self.call_json(self.authorized(Method::PUT, url)?.json(update))
            .await
    }

    /// `POST /v1/channels`: creates a channel of this user and `members`.
    pub async fn create_channel(&self, members: &[UserId]) -> Result<Channel, TransportError> {
        let url = self.url(&["v1", "channels"])?;
        self.call_json(
            self.authorized(Method::POST, url)?
                .json(&CreateChannelRequest {
                    members: members.to_vec(),
                }),
        )
        .await
    }

    /// `GET /v1/channels/{channelId}`: members and member devices.
    pub async fn channel(&self, channel_id: Uuid) -> Result<Channel, TransportError> {
        let url = self.url(&["v1", "channels", &channel_id.to_string()])?;
        self.call_json(self.authorized(Method::GET, url)?).await
    }

    /// `POST /v1/channels/{channelId}/members`: adds members.
    pub async fn add_channel_members(
        &self,
        channel_id: Uuid,
        user_ids: &[UserId],
    ) -> Result<Channel, TransportError> {
        let url = self.url(&["v1", "channels", &channel_id.to_string(), "members"])?;
        self.call_json(
            self.authorized(Method::POST, url)?
                .json(&AddMembersRequest {
                    user_ids: user_ids.to_vec(),
                }),
        )
        .await
    }

    /// `DELETE /v1/channels/{channelId}/members/{userId}`: leaves (own user) or removes a
    /// member (the creator only).
    pub async fn remove_channel_member(
        &self,
        channel_id: Uuid,
        user_id: UserId,
    ) -> Result<(), TransportError> {
        let url = self.url(&[
            "v1",
            "channels",
            &channel_id.to_string(),
            "members",
            &user_id.to_string(),
        ])?;
        self.call_empty(self.authorized(Method::DELETE, url)?).await
    }

    /// `POST /v1/channels/{channelId}/sender-keys`: shares this device's session key.
    pub async fn upload_sender_keys(
        &self,
        channel_id: Uuid,
        request: &UploadSenderKeysRequest,
    ) -> Result<UploadSenderKeysResponse, TransportError> {
        let url = self.url(&["v1", "channels", &channel_id.to_string(), "sender-keys"])?;
        self.call_json(self.authorized(Method::POST, url)?.json(request))
            .await
    }

    /// `POST /v1/channels/{channelId}/messages`: sends a group message; a refusal for
    /// missing sender keys comes back as [`GroupSendOutcome::MissingSenderKeys`].
    pub async fn send_group_message(
        &self,
        channel_id: Uuid,
        request: &SendGroupMessageRequest,
    ) -> Result<GroupSendOutcome, TransportError> {
        let url = self.url(&["v1", "channels", &channel_id.to_string(), "messages"])?;
        match self
            .call_json(self.authorized(Method::POST, url)?.json(request))
            .await
        {
            Ok(sent) => Ok(GroupSendOutcome::Sent(sent)),
            Err(TransportError::Api {
                status,
                code: ErrorCode::MissingSenderKeys,
                details,
                ..
            }) => details
                .and_then(|details| serde_json::from_value(details).ok())
                .map(GroupSendOutcome::MissingSenderKeys)
                .ok_or_else(|| TransportError::UnexpectedResponse {
                    status,
                    problem: "missing_sender_keys without sessionId/devices details".into(),
                }),
            Err(error) => Err(error),
        }
    }

    /// Opens this device's stream (`GET /v1/ws`) after `after` (which acknowledges
    /// everything up to it); see [`StreamConnection::connect`].
    pub async fn open_stream(
        &self,
        after: Option<u64>,
    ) -> Result<StreamConnection, TransportError> {
        let token = self.token.as_ref().ok_or(TransportError::MissingToken)?;
        StreamConnection::connect(&self.base_url, token, after).await
    }

    /// The URL of an endpoint: the base URL's path followed by `segments`, each
    /// percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<Url, TransportError> {
        endpoint(&self.base_url, segments)
    }

    /// A request that carries this device's token.
    fn authorized(&self, method: Method, url: Url) -> Result<RequestBuilder, TransportError> {
        let token = self.token.as_ref().ok_or(TransportError::MissingToken)?;
        let header = token
            .authorization_header()
            .map_err(|_| TransportError::MalformedToken)?;
        Ok(self.http.request(method, url).header(AUTHORIZATION, header))
    }

    /// Sends a request and decodes a success answer's JSON body.
    async fn call_json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, TransportError> {
        let response = successful(request).await?;
        let status = response.status().as_u16();
        let body = read_body(response, MAX_RESPONSE_BYTES).await?;
        serde_json::from_slice(&body).map_err(|error| TransportError::undecodable(status, &error))
    }

    /// Sends a request whose success answer has no body worth reading (`204`).
    async fn call_empty(&self, request: RequestBuilder) -> Result<(), TransportError> {
        successful(request).await.map(drop)
    }
}

/// An inbox page as it arrives, its items not yet read as [`StreamItem`]s.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArrivedInboxPage {
    items: Vec<serde_json::Value>,
    next_cursor: u64,
    has_more: bool,
}

impl ArrivedInboxPage {
    /// The page without the items whose `type` this SDK does not know. An item of a known
    /// type that does not decode is an error (a broken server, not a newer one).
    fn known_items(self) -> Result<InboxPage, TransportError> {
        let mut items = Vec::with_capacity(self.items.len());
        for item in self.items {
            let unknown_type = item
                .get("type")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|tag| !StreamItem::TYPES.contains(&tag));
            if unknown_type {
                continue;
            }
            items.push(
                serde_json::from_value(item)
                    .map_err(|error| TransportError::undecodable(200, &error))?,
            );
        }
        Ok(InboxPage {
            items,
            next_cursor: self.next_cursor,
            has_more: self.has_more,
        })
    }
}

/// Sends a request; a non-success answer becomes the error it carries.
async fn successful(request: RequestBuilder) -> Result<Response, TransportError> {
    let response = request.send().await.map_err(TransportError::from_reqwest)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|value| value.as_bytes().to_vec());
    let body = read_body(response, MAX_ERROR_BODY_BYTES).await?;
    Err(TransportError::from_error_answer(
        status.as_u16(),
        &body,
        retry_after.as_deref(),
    ))
}

/// Reads a body chunk by chunk, refusing it once it passes `limit` bytes.
async fn read_body(mut response: Response, limit: usize) -> Result<Vec<u8>, TransportError> {
    let status = response.status().as_u16();
    let too_large = || TransportError::UnexpectedResponse {
        status,
        problem: format!("the body is larger than {limit} bytes"),
    };
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(too_large());
    }
    // Grows past the announced length only as bytes actually arrive.
    let initial = usize::try_from(announced)
        .unwrap_or(0)
        .min(INITIAL_BODY_CAPACITY);
    let mut body = Vec::with_capacity(initial);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(TransportError::from_reqwest)?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Refuses base URLs the client cannot use, and drops a query or fragment.
fn checked_base_url(mut base_url: Url) -> Result<Url, TransportError> {
    if !matches!(base_url.scheme(), "http" | "https") {
        return Err(TransportError::InvalidBaseUrl {
            reason: "the scheme must be https (or http for a local server)",
        });
    }
    if base_url.cannot_be_a_base() || base_url.host().is_none() {
        return Err(TransportError::InvalidBaseUrl {
            reason: "the URL has no host",
        });
    }
    // Credentials in the URL would end up in Debug output and error messages.
    if !base_url.username().is_empty() || base_url.password().is_some() {
        return Err(TransportError::InvalidBaseUrl {
            reason: "the URL must not carry a username or password",
        });
    }
    base_url.set_query(None);
    base_url.set_fragment(None);
    Ok(base_url)
}

/// `base_url`'s path followed by `segments`.
pub(crate) fn endpoint(base_url: &Url, segments: &[&str]) -> Result<Url, TransportError> {
    let mut url = base_url.clone();
    url.path_segments_mut()
        .map_err(|()| TransportError::InvalidBaseUrl {
            reason: "the URL has no host",
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_page_leaves_out_items_of_unknown_types_and_keeps_its_cursor() {
        let page: ArrivedInboxPage = serde_json::from_str(
            r#"{"items": [
                {"type": "reaction", "seq": 4, "emoji": "+1"},
                {"type": "read", "seq": 5, "readerUserId": "00000000-0000-0000-0000-000000000001",
                 "readerDeviceId": 1, "conversation": {"kind": "direct",
                 "userId": "00000000-0000-0000-0000-000000000002"},
                 "messageId": "00000000-0000-0000-0000-000000000003", "upTo": true,
                 "readAt": "2026-01-01T00:00:00Z"},
                {"type": "future", "seq": 6}
            ], "nextCursor": 6, "hasMore": false}"#,
        )
        .unwrap();
        let page = page.known_items().unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].seq(), 5);
        assert_eq!(page.next_cursor, 6);
        // A known type that does not decode is an error, not skipped.
        let broken: ArrivedInboxPage = serde_json::from_str(
            r#"{"items": [{"type": "envelope", "seq": 1}], "nextCursor": 1, "hasMore": false}"#,
        )
        .unwrap();
        assert!(matches!(
            broken.known_items(),
            Err(TransportError::UnexpectedResponse { .. })
        ));
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_segments() {
        let base = checked_base_url("https://example.com/courier/?x=1#f".parse().unwrap()).unwrap();
        let url = endpoint(&base, &["v1", "keys", "a/b"]).unwrap();
        assert_eq!(url.as_str(), "https://example.com/courier/v1/keys/a%2Fb");
        let root = checked_base_url("http://127.0.0.1:8080".parse().unwrap()).unwrap();
        assert_eq!(
            endpoint(&root, &["v1", "login"]).unwrap().as_str(),
            "http://127.0.0.1:8080/v1/login"
        );
    }

    #[test]
    fn unusable_base_urls_are_refused() {
        for url in [
            "ftp://example.com",
            "mailto:alice@example.com",
            "https://user:pw@example.com",
        ] {
            assert!(
                matches!(
                    ApiClient::new(url.parse().unwrap()),
                    Err(TransportError::InvalidBaseUrl { .. })
                ),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn calls_that_need_a_token_say_so() {
        let client = ApiClient::new("http://127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(matches!(
            client.key_count().await,
            Err(TransportError::MissingToken)
        ));
        let client = client.with_token(AccessToken::new("cdt_bad\nheader"));
        assert!(matches!(
            client.key_count().await,
            Err(TransportError::MalformedToken)
        ));
    }
}
