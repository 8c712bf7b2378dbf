//! The one error body every failed request answers with, and the stable error codes.
//!
//! ```json
//! {"error": {"code": "device_limit_reached", "message": "...", "details": {...}}}
//! ```
//!
//! Clients match on `code` (never on `message`, which is for humans and may change).
//! `details` is present where a client can act on more than the code.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = ($code:literal, $status:literal), )*) => {
        /// A stable, machine-readable error code. Its string form is the wire form.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* #[serde(rename = $code)] $variant, )*
            /// A code this version of the protocol does not know (a newer server).
            #[serde(other)]
            Unknown,
        }

        impl ErrorCode {
            /// Every code the server can send, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire form, e.g. `"device_limit_reached"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// What the code means (its documentation, one line), for the OpenAPI document.
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),*),)*
                    ErrorCode::Unknown => " A code this version of the protocol does not know.",
                }
            }

            /// The HTTP status the server answers this code with.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Unknown => 500,
                }
            }
        }
    };
}

error_codes! {
    /// The body is not syntactically valid JSON.
    MalformedJson = ("malformed_json", 400),
    /// The JSON is valid but does not have the expected shape (missing field, wrong type,
    /// number out of range).
    InvalidRequestBody = ("invalid_request_body", 400),
    /// The request has a body that is not `application/json`.
    UnsupportedMediaType = ("unsupported_media_type", 415),
    /// The body is larger than the server's body limit.
    PayloadTooLarge = ("payload_too_large", 413),
    /// A path segment (a user ID, a device ID) does not parse.
    InvalidPathParameter = ("invalid_path_parameter", 400),
    /// A query parameter does not parse.
    InvalidQueryParameter = ("invalid_query_parameter", 400),
    /// The request line or a header field does not parse, or `Content-Length` /
    /// `Transfer-Encoding` frame the body ambiguously. The connection closes.
    InvalidHttpRequest = ("invalid_http_request", 400),
    /// The request line and headers are larger than the server accepts (or have more than
    /// 100 fields). The connection closes.
    HeadersTooLarge = ("headers_too_large", 431),
    /// The request line and headers, or the body, did not arrive within the server's
    /// timeout. The connection closes.
    RequestTimeout = ("request_timeout", 408),
    /// The server has as many connections that have not authenticated as it takes; it
    /// answers with `Retry-After` and closes.
    TooManyConnections = ("too_many_connections", 503),
    /// No such route.
    NotFound = ("not_found", 404),
    /// The route exists but not with this method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The route needs `Authorization: Bearer <token>` and none was sent.
    MissingToken = ("missing_token", 401),
    /// The bearer token is malformed or unknown.
    InvalidToken = ("invalid_token", 401),
    /// The bearer token belonged to a device that has been removed.
    DeviceRemoved = ("device_removed", 401),
    /// The username breaks the username rules.
    InvalidUsername = ("invalid_username", 400),
    /// The password breaks the password rules.
    InvalidPassword = ("invalid_password", 400),
    /// Another account has this username.
    UsernameTaken = ("username_taken", 409),
    /// Wrong username or password (a deactivated account's included).
    InvalidCredentials = ("invalid_credentials", 401),
    /// The password given to confirm an action (deleting the account) is not the
    /// account's.
    WrongPassword = ("wrong_password", 403),
    /// The server takes no new accounts (its operator closed registration).
    RegistrationClosed = ("registration_closed", 403),
    /// The server takes new accounts with a registration token only, and the request's is
    /// missing, unknown, expired, revoked or used up.
    InvalidRegistrationToken = ("invalid_registration_token", 403),
    /// The device name is empty, too long or has control characters.
    InvalidDeviceName = ("invalid_device_name", 400),
    /// The user already has as many devices as the server allows. Details carry `count`,
    /// `limit` and `devices`.
    DeviceLimitReached = ("device_limit_reached", 409),
    /// The caller's user has no such (active) device.
    DeviceNotFound = ("device_not_found", 404),
    /// No such user.
    UserNotFound = ("user_not_found", 404),
    /// A key or signature field is not valid base64. Details carry `field`.
    InvalidBase64 = ("invalid_base64", 400),
    /// A key or signature decodes to the wrong number of bytes. Details carry `field`,
    /// `expected` and `actual`.
    InvalidKeyLength = ("invalid_key_length", 400),
    /// A key ID breaks the key ID rules.
    InvalidKeyId = ("invalid_key_id", 400),
    /// The Ed25519 identity key is not a valid public key.
    InvalidPublicKey = ("invalid_public_key", 400),
    /// A signature does not verify. Details carry `field` (and `keyId` for one-time keys).
    InvalidSignature = ("invalid_signature", 400),
    /// The device already published different identity keys; a device's identity never
    /// changes (a new identity is a new device).
    IdentityKeysConflict = ("identity_keys_conflict", 409),
    /// The device must publish its identity keys before one-time or fallback keys.
    IdentityKeysRequired = ("identity_keys_required", 409),
    /// One upload names the same key ID twice.
    DuplicateKeyId = ("duplicate_key_id", 400),
    /// A key ID was uploaded before with a different key. Details carry `keyIds`.
    OneTimeKeyConflict = ("one_time_key_conflict", 409),
    /// More one-time keys in one upload than allowed. Details carry `max`.
    TooManyKeys = ("too_many_keys", 400),
    /// The upload would leave more unclaimed one-time keys stored than allowed. Details
    /// carry `stored` and `max`.
    OneTimeKeyLimitReached = ("one_time_key_limit_reached", 409),
    /// A claim names more devices than allowed. Details carry `max`.
    TooManyDevices = ("too_many_devices", 400),
    /// The client message ID is empty, too long, or outside `[A-Za-z0-9_-]`.
    InvalidClientMessageId = ("invalid_client_message_id", 400),
    /// The sending device already used this client message ID for a message to another
    /// conversation (another recipient user, a channel instead of a user, or another
    /// channel); nothing was stored.
    ClientMessageIdReused = ("client_message_id_reused", 409),
    /// `protocolVersion` is neither 1 nor 2. Details carry `supported`.
    UnsupportedProtocolVersion = ("unsupported_protocol_version", 400),
    /// An envelope is unusable: empty ciphertext, or a `legacy` type in a V2 send.
    /// Details carry `field`.
    InvalidEnvelope = ("invalid_envelope", 400),
    /// Two envelopes name the same device. Details carry `userId` and `deviceId`.
    DuplicateEnvelope = ("duplicate_envelope", 400),
    /// An envelope's ciphertext is larger than the envelope size limit. Details carry
    /// `field` and `max` (bytes, decoded).
    EnvelopeTooLarge = ("envelope_too_large", 413),
    /// More envelopes in one message than allowed. Details carry `max`.
    TooManyEnvelopes = ("too_many_envelopes", 400),
    /// The envelope set does not match the current device lists. Details carry `missing`,
    /// `extra` and `stale` (see `DeviceListMismatch`); nothing was stored.
    DeviceListMismatch = ("device_list_mismatch", 409),
    /// The recipient has no device that can receive the message; nothing was stored.
    RecipientUnreachable = ("recipient_unreachable", 409),
    /// No such message for the calling device (including another device's or user's).
    MessageNotFound = ("message_not_found", 404),
    /// The calling device's envelope for this message was delivered and its ciphertext
    /// purged.
    EnvelopeDelivered = ("envelope_delivered", 410),
    /// No such channel, or the caller is not a member of it.
    ChannelNotFound = ("channel_not_found", 404),
    /// The user is not a member of the channel.
    NotAMember = ("not_a_member", 404),
    /// Only the channel's creator may remove other members.
    NotChannelCreator = ("not_channel_creator", 403),
    /// The channel would have more members than allowed. Details carry `max`.
    TooManyMembers = ("too_many_members", 400),
    /// A Megolm session ID is empty, too long, or not base64 characters.
    InvalidSessionId = ("invalid_session_id", 400),
    /// A sender key names a device that is not a current member device of the channel.
    /// Details carry `devices`; nothing was stored.
    NotAMemberDevice = ("not_a_member_device", 409),
    /// Current member devices have no sender key of this session from the sending device,
    /// so they could not decrypt the message. Details carry `sessionId` and `devices`
    /// (see `MissingSenderKeys`); nothing was stored.
    MissingSenderKeys = ("missing_sender_keys", 409),
    /// The client went past a rate limit (per address, account or device); nothing was
    /// stored. The answer carries `Retry-After` (whole seconds); details carry `limit`
    /// (which one) and `retryAfterSeconds`.
    RateLimited = ("rate_limited", 429),
    /// `GET /v1/ws` without a WebSocket upgrade.
    NotWebSocket = ("not_websocket", 400),
    /// The server failed; details are in its log, not in the answer.
    InternalError = ("internal_error", 500),
    /// The server cannot serve right now (its database is unreachable).
    ServiceUnavailable = ("service_unavailable", 503),
}

/// The schema by hand: utoipa's derive ignores the `serde(rename)` that the macro puts
/// on each variant and listed the Rust names, which no response carries. The document
/// lists exactly the wire forms the server sends (`Unknown` is the client's fallback,
/// never sent).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some(
                "A stable, machine-readable error code. Its string form is the wire form.",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a stable code, a human-readable message, and details where useful.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// The stable, machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation (not for matching).
    pub message: String,
    /// Structured details, depending on the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_matches_as_str_for_every_code() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
            assert!((400..600).contains(&code.http_status()));
        }
    }

    #[test]
    fn unknown_codes_from_a_newer_server_still_parse() {
        let code: ErrorCode = serde_json::from_str("\"something_new\"").unwrap();
        assert_eq!(code, ErrorCode::Unknown);
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(
                seen.insert(code.as_str()),
                "duplicate code {}",
                code.as_str()
            );
        }
    }
}
