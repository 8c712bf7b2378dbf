//! The limits in the document's schemas: lengths, patterns, counts and ranges, each from
//! the constant or setting the server enforces (utoipa's attributes take only literals).
//! `server/tests/openapi_limits.rs` checks each value, and that the server accepts a
//! request at the limit and refuses one past it.

use courier_protocol::DeviceId;
use courier_protocol::api::messages::PROTOCOL_VERSIONS;
use courier_protocol::api::receipts::MAX_DELIVERIES_PER_RECEIPT;
use courier_protocol::api::stream::MAX_SEQ;
use courier_protocol::keys::{
    CURVE25519_KEY_LEN, ED25519_KEY_LEN, ED25519_SIGNATURE_LEN, max_base64_len,
};
use courier_protocol::limits::{
    CLIENT_MESSAGE_ID_MAX_CHARS, DEVICE_NAME_MAX_CHARS, KEY_ID_MAX_CHARS, MAX_CHANNEL_MEMBERS,
    MAX_DEVICES_PER_CLAIM, MAX_INBOX_PAGE_ITEMS, MAX_ONE_TIME_KEYS_PER_UPLOAD, PASSWORD_MAX_BYTES,
    PASSWORD_MIN_CHARS, SESSION_ID_MAX_CHARS, USERNAME_MAX_CHARS, USERNAME_MIN_CHARS,
};
use serde_json::{Value, json};

use crate::config::Settings;

/// A username as a client may send it (case-insensitive; `limits::canonical_username`).
const USERNAME: &str = "^[A-Za-z][A-Za-z0-9._-]*$";
/// A username as the server answers it (canonical: lowercase).
const CANONICAL_USERNAME: &str = "^[a-z][a-z0-9._-]*$";
/// A device name: no control characters (`char::is_control`: Unicode category Cc, U+0000
/// to U+001F and U+007F to U+009F). The range ends are the characters themselves (JSON
/// escapes them), which every regex dialect reads alike.
const DEVICE_NAME: &str = "^[^\u{0}-\u{1F}\u{7F}-\u{9F}]*$";
/// A key ID (`limits::check_key_id`).
const KEY_ID: &str = "^[A-Za-z0-9_+/=-]+$";
/// A client message ID (`limits::check_client_message_id`).
const CLIENT_MESSAGE_ID: &str = "^[A-Za-z0-9_-]+$";
/// A Megolm session ID: unpadded base64, standard or URL-safe (the channel routes).
const SESSION_ID: &str = "^[A-Za-z0-9+/_-]+$";
/// Standard base64, padded or not, with canonical trailing bits (as `keys::decode_base64`
/// accepts it): groups of four, then two characters (the second with its low four bits
/// zero) and optionally `==`, or three (the third with its low two bits zero) and
/// optionally `=`.
const BASE64: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw](?:==)?|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=?)?$";

/// The base64 of exactly `bytes` bytes, padded or not, with canonical trailing bits.
fn fixed_base64(bytes: usize) -> String {
    let full = bytes / 3 * 4;
    match bytes % 3 {
        0 => format!("^[A-Za-z0-9+/]{{{full}}}$"),
        1 => format!("^[A-Za-z0-9+/]{{{}}}[AQgw](?:==)?$", full + 1),
        _ => format!("^[A-Za-z0-9+/]{{{}}}[AEIMQUYcgkosw048]=?$", full + 2),
    }
}

/// Sets the limits on the finished document's schemas. The configurable ones (envelope
/// size, envelopes per message) are `settings`': the served document states the serving
/// server's, `docs/openapi.json` the defaults.
pub(super) fn apply(document: &mut Value, settings: &Settings) {
    let username = json!({
        "minLength": USERNAME_MIN_CHARS,
        "maxLength": USERNAME_MAX_CHARS,
        "pattern": USERNAME,
    });
    let canonical_username = json!({
        "minLength": USERNAME_MIN_CHARS,
        "maxLength": USERNAME_MAX_CHARS,
        "pattern": CANONICAL_USERNAME,
    });
    let password = json!({
        "minLength": PASSWORD_MIN_CHARS,
        // maxLength counts characters: the limit is bytes of UTF-8, so this bounds only
        // what a password of one-byte characters may reach; the description says so.
        "maxLength": PASSWORD_MAX_BYTES,
    });
    let device_name = json!({
        "minLength": 1,
        "maxLength": DEVICE_NAME_MAX_CHARS,
        "pattern": DEVICE_NAME,
    });
    let key_id = json!({ "minLength": 1, "maxLength": KEY_ID_MAX_CHARS, "pattern": KEY_ID });
    let client_message_id = json!({
        "minLength": 1,
        "maxLength": CLIENT_MESSAGE_ID_MAX_CHARS,
        "pattern": CLIENT_MESSAGE_ID,
    });
    let session_id = json!({
        "minLength": 1,
        "maxLength": SESSION_ID_MAX_CHARS,
        "pattern": SESSION_ID,
    });
    let key = json!({ "pattern": fixed_base64(CURVE25519_KEY_LEN) });
    let signing_key = json!({ "pattern": fixed_base64(ED25519_KEY_LEN) });
    let signature = json!({ "pattern": fixed_base64(ED25519_SIGNATURE_LEN) });
    // What a client sends is bounded by this server's envelope limit; what it receives
    // was bounded when it was sent (the limit may have changed since), so only its
    // alphabet is stated.
    let sent_ciphertext = json!({
        "minLength": 1,
        "maxLength": max_base64_len(settings.max_envelope_bytes),
        "pattern": BASE64,
    });
    let received_ciphertext = json!({ "minLength": 1, "pattern": BASE64 });
    let client_seq = json!({ "minimum": 0, "maximum": MAX_SEQ });
    let item_seq = json!({ "minimum": 1, "maximum": MAX_SEQ });
    let device_id = json!({ "minimum": 1, "maximum": DeviceId::MAX });
    let versions = json!({
        "minimum": PROTOCOL_VERSIONS.iter().min(),
        "maximum": PROTOCOL_VERSIONS.iter().max(),
    });
    let envelopes = json!({ "maxItems": settings.max_envelopes_per_message });
    // The caller is always a member, so a request names at most the limit less one.
    let other_members = json!({ "maxItems": MAX_CHANNEL_MEMBERS - 1 });
    let members = json!({ "maxItems": MAX_CHANNEL_MEMBERS });

    let schema =
        |name: &str, property: &str| format!("/components/schemas/{name}/properties/{property}");
    let rules: Vec<(String, &Value)> = vec![
        (schema("CreateAccountRequest", "username"), &username),
        (schema("CreateAccountRequest", "password"), &password),
        (
            schema("CreateAccountResponse", "username"),
            &canonical_username,
        ),
        (schema("LoginRequest", "deviceName"), &device_name),
        (schema("OwnDevice", "deviceName"), &device_name),
        (schema("SignedKey", "keyId"), &key_id),
        (schema("SignedKey", "key"), &key),
        (schema("SignedKey", "signature"), &signature),
        (schema("IdentityKeys", "curve25519"), &key),
        (schema("IdentityKeys", "ed25519"), &signing_key),
        (schema("IdentityKeys", "signature"), &signature),
        (
            schema("SendMessageRequest", "clientMessageId"),
            &client_message_id,
        ),
        (
            schema("SendGroupMessageRequest", "clientMessageId"),
            &client_message_id,
        ),
        (schema("SendMessageRequest", "protocolVersion"), &versions),
        (schema("Envelope", "protocolVersion"), &versions),
        (schema("UploadSenderKeysRequest", "sessionId"), &session_id),
        (schema("SendGroupMessageRequest", "sessionId"), &session_id),
        (schema("SenderKeyDistribution", "sessionId"), &session_id),
        (schema("GroupMessage", "sessionId"), &session_id),
        (schema("MissingSenderKeys", "sessionId"), &session_id),
        (schema("DeviceEnvelope", "ciphertext"), &sent_ciphertext),
        (
            schema("SendMessageRequest", "encryptedEnvelope"),
            &sent_ciphertext,
        ),
        (schema("DeviceSenderKey", "ciphertext"), &sent_ciphertext),
        (
            schema("SendGroupMessageRequest", "ciphertext"),
            &sent_ciphertext,
        ),
        (schema("Envelope", "ciphertext"), &received_ciphertext),
        (schema("GroupMessage", "ciphertext"), &received_ciphertext),
        (
            schema("SenderKeyDistribution", "ciphertext"),
            &received_ciphertext,
        ),
        (schema("SendMessageRequest", "deviceEnvelopes"), &envelopes),
        (
            schema("UploadSenderKeysRequest", "distributions"),
            &envelopes,
        ),
        (schema("CreateChannelRequest", "members"), &other_members),
        (schema("AddMembersRequest", "userIds"), &other_members),
        (schema("Channel", "members"), &members),
        (schema("MembershipChange", "members"), &members),
        (schema("AckRequest", "upTo"), &client_seq),
        (schema("InboxPage", "nextCursor"), &client_seq),
        (schema("ControlFrameCaughtUp", "cursor"), &client_seq),
        (schema("ClientFrameAck", "upTo"), &client_seq),
        ("/components/schemas/DeviceId".to_owned(), &device_id),
    ];
    for (pointer, limits) in rules {
        extend(document, &pointer, limits);
    }
    for name in [
        "Envelope",
        "GroupMessage",
        "SenderKeyDistribution",
        "MembershipChange",
        "DeliveredReceipt",
        "ReadReceipt",
    ] {
        extend(document, &schema(name, "seq"), &item_seq);
    }
    let counts = [
        (
            schema("UploadOneTimeKeysRequest", "oneTimeKeys"),
            MAX_ONE_TIME_KEYS_PER_UPLOAD,
        ),
        (schema("ClaimKeysRequest", "devices"), MAX_DEVICES_PER_CLAIM),
        (
            schema("DeliveredReceipt", "deliveries"),
            MAX_DELIVERIES_PER_RECEIPT,
        ),
        (schema("InboxPage", "items"), MAX_INBOX_PAGE_ITEMS as usize),
    ];
    for (pointer, max) in counts {
        extend(document, &pointer, &json!({ "maxItems": max }));
    }
    extend(
        document,
        &format!("{}/items", schema("ClientFrameAck", "seqs")),
        &client_seq,
    );

    // A login's `deviceId` alone may be 0 ("assign me one"): its own schema, not DeviceId's.
    if let Some(property) = document.pointer_mut(&schema("LoginRequest", "deviceId")) {
        let description = property.get("description").cloned().unwrap_or(Value::Null);
        *property = json!({
            "type": "integer",
            "format": "int32",
            "minimum": 0,
            "maximum": DeviceId::MAX,
            "description": description,
        });
    }

    // Parameters: device IDs in paths, sequence numbers and the page size in queries.
    let page = json!({ "minimum": 1, "maximum": MAX_INBOX_PAGE_ITEMS });
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for parameter in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("parameters"))
        .filter_map(Value::as_array_mut)
        .flatten()
    {
        let limits = match parameter.get("name").and_then(Value::as_str) {
            Some("deviceId") if parameter["in"] == "path" => &device_id,
            Some("after") => &client_seq,
            Some("limit") => &page,
            _ => continue,
        };
        if let Some(schema) = parameter.get_mut("schema") {
            merge(schema, limits);
        }
    }
}

/// Adds `limits` to the schema at `pointer` (for an `allOf`, `oneOf` or nullable `$ref`
/// wrapper, the limits join the wrapper, which every value must satisfy).
fn extend(document: &mut Value, pointer: &str, limits: &Value) {
    if let Some(schema) = document.pointer_mut(pointer) {
        merge(schema, limits);
    }
}

fn merge(schema: &mut Value, limits: &Value) {
    if let (Some(schema), Some(limits)) = (schema.as_object_mut(), limits.as_object()) {
        for (keyword, value) in limits {
            schema.insert(keyword.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_base64_patterns_have_the_encoded_lengths() {
        assert_eq!(fixed_base64(32), "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=?$");
        assert_eq!(fixed_base64(64), "^[A-Za-z0-9+/]{85}[AQgw](?:==)?$");
        assert_eq!(fixed_base64(3), "^[A-Za-z0-9+/]{4}$");
    }
}
