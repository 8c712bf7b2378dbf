//! The WebSocket in the document: `ServerFrame` as one union of every frame the server
//! sends (stream items and control frames, told apart by `type`), `ClientFrame`, the close
//! codes, and the socket route pointing at them (`x-websocket`). OpenAPI has no way to
//! describe a socket's messages; `server/tests/openapi_frames.rs` validates real frames
//! against these components.

use courier_protocol::api::stream::{INVALID_FRAME, close_code};
use serde_json::{Map, Value, json};

/// The route that opens the stream.
const SOCKET_PATH: &str = "/v1/ws";

/// Every close code the server sends, with its meaning and a name for generators.
const CLOSE_CODES: [(u16, &str, &str); 7] = [
    (
        close_code::REPLACED,
        "Replaced",
        "A newer connection of the same device replaced this one.",
    ),
    (
        close_code::IDLE_TIMEOUT,
        "IdleTimeout",
        "No frame (not even a pong) arrived within the idle timeout.",
    ),
    (
        close_code::DEVICE_REMOVED,
        "DeviceRemoved",
        "The device was removed; its token no longer works.",
    ),
    (
        close_code::TOO_SLOW,
        "TooSlow",
        "The device read too slowly for too long; reconnect and catch up from the inbox.",
    ),
    (
        close_code::TOKEN_REVOKED,
        "TokenRevoked",
        "The token the socket was opened with is no longer valid (the device logged in again); reconnect with the current token.",
    ),
    (
        close_code::GOING_AWAY,
        "GoingAway",
        "The server is shutting down (standard \"going away\"); reconnect.",
    ),
    (
        close_code::SERVER_ERROR,
        "ServerError",
        "The server could not read or encode the stream, or check the socket's token (standard \"internal error\"); reconnect after a backoff.",
    ),
];

/// Runs after the discriminators are in place (it reads `StreamItem`'s and
/// `ControlFrame`'s variants).
pub(super) fn apply(document: &mut Value) {
    let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    flatten_server_frame(schemas);
    if let Some(code) = schemas
        .get_mut("ControlFrameError")
        .and_then(|schema| schema.pointer_mut("/properties/code"))
        .and_then(Value::as_object_mut)
    {
        code.insert("enum".to_owned(), json!([INVALID_FRAME]));
    }
    schemas.insert("WebSocketCloseCode".to_owned(), close_code_schema());

    if let Some(operation) = document
        .pointer_mut(&format!("/paths/{}/get", SOCKET_PATH.replace('/', "~1")))
        .and_then(Value::as_object_mut)
    {
        operation.insert(
            "x-websocket".to_owned(),
            json!({
                "serverFrame": { "$ref": "#/components/schemas/ServerFrame" },
                "clientFrame": { "$ref": "#/components/schemas/ClientFrame" },
                "closeCode": { "$ref": "#/components/schemas/WebSocketCloseCode" },
            }),
        );
        if let Some(Value::String(description)) = operation.get_mut("description") {
            description.push_str(
                "\n\nThe frames are JSON text: the server sends `ServerFrame`, the client `ClientFrame`; the server closes with a `WebSocketCloseCode` (all three are components, named in this operation's `x-websocket`).",
            );
        }
    }
}

/// `ServerFrame` is an untagged union of `StreamItem` and `ControlFrame`, both tagged by
/// `type`: one flat union of their variants with one discriminator is what generators
/// narrow on.
fn flatten_server_frame(schemas: &mut Map<String, Value>) {
    let mut one_of = Vec::new();
    let mut mapping = Map::new();
    for union in ["StreamItem", "ControlFrame"] {
        let Some(schema) = schemas.get(union) else {
            return;
        };
        let (Some(variants), Some(tags)) = (
            schema.get("oneOf").and_then(Value::as_array),
            schema
                .pointer("/discriminator/mapping")
                .and_then(Value::as_object),
        ) else {
            return;
        };
        one_of.extend(variants.iter().cloned());
        mapping.extend(tags.clone());
    }
    if let Some(frame) = schemas
        .get_mut("ServerFrame")
        .and_then(Value::as_object_mut)
    {
        frame.insert("oneOf".to_owned(), Value::Array(one_of));
        frame.insert(
            "discriminator".to_owned(),
            json!({ "propertyName": "type", "mapping": mapping }),
        );
    }
}

fn close_code_schema() -> Value {
    let list = CLOSE_CODES
        .iter()
        .map(|(code, _, meaning)| format!("- `{code}`: {meaning}"))
        .collect::<Vec<_>>()
        .join("\n");
    json!({
        "type": "integer",
        "description": format!("The codes the server closes the stream socket (`GET /v1/ws`) with:\n\n{list}"),
        "enum": CLOSE_CODES.iter().map(|(code, _, _)| code).collect::<Vec<_>>(),
        "x-enum-varnames": CLOSE_CODES.iter().map(|(_, name, _)| name).collect::<Vec<_>>(),
        "x-enum-descriptions": CLOSE_CODES.iter().map(|(_, _, meaning)| meaning).collect::<Vec<_>>(),
    })
}
