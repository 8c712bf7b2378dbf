//! The OpenAPI document: the handlers' annotations, each operation's error responses (one
//! per status, listing exactly the codes it answers with, an example of each), and the
//! finishing touches utoipa cannot express (servers, the code-to-details rules,
//! discriminators on tagged unions).
//!
//! Each handler names its errors with [`operation_errors!`]: the codes, grouped by their
//! status here. `server/tests/openapi_responses.rs` runs every operation and checks that
//! every documented code is answered and every answer is documented.

use std::collections::BTreeMap;

use courier_protocol::ErrorCode;
use courier_protocol::api::errors::DetailsPresence;
use serde_json::{Value, json};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};

/// Every authenticated route answers these.
pub(crate) const AUTH: &[ErrorCode] = &[
    ErrorCode::MissingToken,
    ErrorCode::InvalidToken,
    ErrorCode::DeviceRemoved,
];

/// Every route with a JSON body answers these.
pub(crate) const JSON_BODY: &[ErrorCode] = &[
    ErrorCode::MalformedJson,
    ErrorCode::InvalidRequestBody,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::PayloadTooLarge,
];

/// Every route that asks the database answers these when it cannot.
pub(crate) const DATABASE: &[ErrorCode] =
    &[ErrorCode::ServiceUnavailable, ErrorCode::InternalError];

/// Declares a type whose [`utoipa::IntoResponses`] documents an operation's errors:
/// `operation_errors!(Name: GROUP + GROUP + [Code, Code])`, the groups from this module.
macro_rules! operation_errors {
    ($(#[doc = $doc:literal])* $name:ident: $($group:ident +)* [$($code:ident),* $(,)?]) => {
        $(#[doc = $doc])*
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                let mut codes: Vec<courier_protocol::ErrorCode> = Vec::new();
                $(codes.extend_from_slice($crate::api_doc::$group);)*
                codes.extend_from_slice(&[$(courier_protocol::ErrorCode::$code),*]);
                $crate::api_doc::error_responses(&codes)
            }
        }
    };
}
pub(crate) use operation_errors;

/// One response per status: its description lists the codes, its schema allows only
/// them, and it carries one example per code.
pub(crate) fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        let list = by_status.entry(code.http_status()).or_default();
        if !list.contains(code) {
            list.push(*code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| (status.to_string(), error_response(&codes).into()))
        .collect()
}

fn error_response(codes: &[ErrorCode]) -> Response {
    let description = codes
        .iter()
        .map(|code| format!("- `{}`: {}", code.as_str(), code.description().trim()))
        .collect::<Vec<_>>()
        .join("\n");
    let code_schema = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .enum_values(Some(codes.iter().map(|code| code.as_str())));
    let narrowed = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .property(
            "error",
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::Object))
                .property("code", code_schema),
        );
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("ErrorBody"))
        .item(narrowed);
    let examples = codes.iter().map(|code| {
        let mut error = json!({ "code": code.as_str(), "message": code.description().trim() });
        if let Some(details) = example_details(*code) {
            error["details"] = details;
        }
        (
            code.as_str(),
            ExampleBuilder::new()
                .summary(code.as_str())
                .value(Some(json!({ "error": error })))
                .build(),
        )
    });
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(schema))
            .examples_from_iter(examples)
            .build(),
    );
    if codes
        .iter()
        .any(|code| matches!(code, ErrorCode::RateLimited | ErrorCode::ServiceUnavailable))
    {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::new(Type::Integer))
                        .minimum(Some(1)),
                )
                .description(Some(
                    "Whole seconds to wait before trying again (rate_limited, service_unavailable)",
                ))
                .build(),
        );
    }
    response.build()
}

/// An example `details` for a code, matching its schema (the test validates each example).
fn example_details(code: ErrorCode) -> Option<Value> {
    let user = "0190b3a4-9a5e-7c1d-8f3e-2b4c6d8e0f12";
    let schema = match code.details() {
        DetailsPresence::Never => return None,
        DetailsPresence::Always(schema) | DetailsPresence::Sometimes(schema) => schema,
    };
    Some(match (code, schema) {
        (ErrorCode::InvalidPublicKey, _) => json!({ "field": "ed25519" }),
        (ErrorCode::InvalidKeyId, _) => json!({ "field": "oneTimeKeys[0].keyId" }),
        (ErrorCode::InvalidEnvelope, _) => json!({ "field": "deviceEnvelopes[0].ciphertext" }),
        (_, "FieldDetails") => json!({ "field": "deviceEnvelopes[0].ciphertext" }),
        (_, "SignatureDetails") => {
            json!({ "field": "oneTimeKeys[3].signature", "keyId": "AAAAAw" })
        }
        (_, "KeyLengthDetails") => json!({ "field": "curve25519", "expected": 32, "actual": 31 }),
        (ErrorCode::InvalidQueryParameter, _) => json!({ "field": "limit", "max": 1000 }),
        (_, "FieldLimitDetails") => {
            json!({ "field": "deviceEnvelopes[0].ciphertext", "max": 65536 })
        }
        (_, "CountLimitDetails") => json!({ "max": 100 }),
        (_, "DuplicateKeyIdDetails") => json!({ "keyId": "AAAAAQ" }),
        (_, "KeyConflictDetails") => json!({ "keyIds": ["AAAAAQ"] }),
        (_, "StoredKeysDetails") => json!({ "stored": 450, "max": 500 }),
        (_, "SupportedVersionsDetails") => json!({ "supported": [1, 2] }),
        (_, "DeviceRef") => json!({ "userId": user, "deviceId": 2 }),
        (_, "UnknownUsersDetails") => json!({ "userIds": [user] }),
        (_, "DevicesDetails") => json!({ "devices": [{ "userId": user, "deviceId": 2 }] }),
        (_, "RateLimitDetails") => {
            json!({ "limit": "sends_per_device", "retryAfterSeconds": 3 })
        }
        (_, "DeviceLimitDetails") => json!({
            "count": 1,
            "limit": 1,
            "devices": [{
                "deviceId": 1,
                "deviceName": "Alice's phone",
                "createdAt": "2026-11-30T09:12:44Z",
                "lastSeenAt": "2026-12-02T18:03:10Z",
                "hasIdentityKeys": true,
            }],
        }),
        (_, "DeviceListMismatch") => json!({
            "missing": [{ "userId": user, "deviceId": 3 }],
            "extra": [],
            "stale": [{ "userId": user, "deviceId": 1 }],
        }),
        (_, "MissingSenderKeys") => json!({
            "sessionId": "Pz0JS1i2c5PyM3aUoYJ2K3bNcqzNBnTzyfTuqAfu6bI",
            "devices": [{ "userId": user, "deviceId": 2 }],
        }),
        _ => return None,
    })
}

/// Where a local server listens (`scripts/run.sh`); a deployment serves the same paths
/// at its own URL.
const LOCAL_SERVER: &str = "http://127.0.0.1:8080";

/// The generated document, finished: what `/openapi.json` serves.
pub(crate) fn finish(openapi: &utoipa::openapi::OpenApi) -> Value {
    let mut document = serde_json::to_value(openapi).unwrap_or_default();
    document["servers"] = json!([{
        "url": LOCAL_SERVER,
        "description": "A local server as `scripts/run.sh` starts it; a deployment serves the same paths at its own URL",
    }]);
    split_summaries(&mut document);
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert("ErrorDetail".to_owned(), error_detail_schema());
        add_discriminators(schemas);
    }
    document
}

/// `ErrorDetail` with `details` typed: a union of every details schema for generators,
/// and for validators the rule tying each code to its details (or to none).
fn error_detail_schema() -> Value {
    let mut names: Vec<&str> = Vec::new();
    let mut rules = Vec::new();
    let mut without = Vec::new();
    for code in ErrorCode::ALL {
        match code.details() {
            DetailsPresence::Never => without.push(code.as_str()),
            DetailsPresence::Always(name) | DetailsPresence::Sometimes(name) => {
                if !names.contains(&name) {
                    names.push(name);
                }
                let mut then = json!({
                    "properties": { "details": { "$ref": format!("#/components/schemas/{name}") } }
                });
                if matches!(code.details(), DetailsPresence::Always(_)) {
                    then["required"] = json!(["details"]);
                }
                rules.push(json!({
                    "if": { "properties": { "code": { "const": code.as_str() } } },
                    "then": then,
                }));
            }
        }
    }
    rules.push(json!({
        "if": { "properties": { "code": { "enum": without } } },
        "then": { "not": { "required": ["details"] } },
    }));
    json!({
        "type": "object",
        "description": "What went wrong: a stable code, a human-readable message, and details where a client can act on more than the code (which codes carry which details: see each code in docs/api.md).",
        "required": ["code", "message"],
        "properties": {
            "code": { "$ref": "#/components/schemas/ErrorCode" },
            "message": { "type": "string", "description": "A human-readable explanation (not for matching)." },
            "details": {
                "description": "Structured details; their schema depends on `code`.",
                "anyOf": names.iter().map(|name| json!({ "$ref": format!("#/components/schemas/{name}") })).collect::<Vec<_>>(),
            },
        },
        "allOf": rules,
    })
}

/// utoipa puts a handler's whole doc comment in `summary`: keep the first sentence there
/// and the whole text in `description`.
fn split_summaries(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut)
    {
        let Some(summary) = operation.get("summary").and_then(Value::as_str) else {
            continue;
        };
        let text = summary.to_owned();
        let first = text
            .find(". ")
            .map_or(text.as_str(), |end| &text[..=end])
            .trim_end_matches('.')
            .to_owned();
        let description = match operation.get("description").and_then(Value::as_str) {
            Some(more) if !more.is_empty() => format!("{text}\n\n{more}"),
            _ => text,
        };
        operation.insert("summary".to_owned(), Value::String(first));
        operation.insert("description".to_owned(), Value::String(description));
    }
}

/// A `oneOf` whose every variant fixes one property to one value is a tagged union:
/// each variant becomes its own component (`<Union><Tag>`), and the union gets a
/// discriminator mapping each tag to it, as generators need.
fn add_discriminators(schemas: &mut serde_json::Map<String, Value>) {
    let unions: Vec<String> = schemas.keys().cloned().collect();
    for name in unions {
        let Some(variants) = schemas
            .get(&name)
            .and_then(|schema| schema.get("oneOf"))
            .and_then(Value::as_array)
            .cloned()
        else {
            continue;
        };
        let tags: Option<Vec<(String, String)>> = variants.iter().map(variant_tag).collect();
        let Some(tags) = tags else { continue };
        let Some(property) = tags.first().map(|(property, _)| property.clone()) else {
            continue;
        };
        if tags.iter().any(|(other, _)| *other != property) {
            continue;
        }
        let mut one_of = Vec::new();
        let mut mapping = serde_json::Map::new();
        for (variant, (_, tag)) in variants.into_iter().zip(&tags) {
            let component = format!("{name}{}", pascal_case(tag));
            let reference = format!("#/components/schemas/{component}");
            schemas.insert(component, variant);
            one_of.push(json!({ "$ref": reference }));
            mapping.insert(tag.clone(), Value::String(reference));
        }
        if let Some(union) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            union.insert("oneOf".to_owned(), Value::Array(one_of));
            union.insert(
                "discriminator".to_owned(),
                json!({ "propertyName": property, "mapping": mapping }),
            );
        }
    }
}

/// The property and value a union variant fixes (`{"type": {"enum": ["envelope"]}}`),
/// directly or in one of its `allOf` parts.
fn variant_tag(variant: &Value) -> Option<(String, String)> {
    let parts: Vec<&Value> = match variant.get("allOf").and_then(Value::as_array) {
        Some(parts) => parts.iter().collect(),
        None => vec![variant],
    };
    parts.into_iter().find_map(|part| {
        let required = part.get("required")?.as_array()?;
        let properties = part.get("properties")?.as_object()?;
        properties.iter().find_map(|(property, schema)| {
            let values = schema.get("enum")?.as_array()?;
            match (values.as_slice(), required.iter().any(|r| r == property)) {
                ([Value::String(tag)], true) => Some((property.clone(), tag.clone())),
                _ => None,
            }
        })
    })
}

fn pascal_case(tag: &str) -> String {
    let mut chars = tag.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}
