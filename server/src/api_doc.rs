//! The OpenAPI document: the handlers' annotations, each operation's error responses (one
//! per status, listing exactly the codes it answers with, an example of each), and the
//! finishing touches utoipa cannot express (servers, details per code as a discriminated
//! union, discriminators on tagged unions, the schemas' limits, the WebSocket's frames,
//! examples).
//!
//! Each handler names its errors with [`operation_errors!`]: the codes, grouped by their
//! status here. `server/tests/openapi_responses.rs` runs every operation and checks that
//! every documented code is answered and every answer is documented.

mod examples;
mod frames;
mod limits;

use std::collections::BTreeMap;

use courier_protocol::ErrorCode;
use courier_protocol::api::errors::DetailsPresence;
use serde_json::{Value, json};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};

use crate::config::Settings;

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
                .property("code", code_schema)
                .required("code"),
        )
        .required("error");
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

/// The generated document, finished: what `/openapi.json` serves. The configurable
/// limits it states are `settings`'.
pub(crate) fn finish(openapi: &utoipa::openapi::OpenApi, settings: &Settings) -> Value {
    let mut document = serde_json::to_value(openapi).unwrap_or_default();
    document["servers"] = json!([{
        "url": LOCAL_SERVER,
        "description": "A local server as `scripts/run.sh` starts it; a deployment serves the same paths at its own URL",
    }]);
    split_summaries(&mut document);
    strip_doc_links(&mut document);
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        add_discriminators(schemas);
        add_error_details(schemas);
    }
    frames::apply(&mut document);
    limits::apply(&mut document, settings);
    add_examples(&mut document);
    document
}

/// Sets each operation's request and success examples (`examples.rs`).
fn add_examples(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let Some(id) = operation
            .get("operationId")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            continue;
        };
        if let (Some(content), Some(example)) = (
            operation.pointer_mut("/requestBody/content/application~1json"),
            examples::request(&id),
        ) {
            content["example"] = example;
        }
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (status, response) in responses.iter_mut() {
            let Ok(status) = status.parse::<u16>() else {
                continue;
            };
            if status >= 400 {
                continue;
            }
            if let (Some(content), Some(example)) = (
                response.pointer_mut("/content/application~1json"),
                examples::response(&id, status),
            ) {
                content["example"] = example;
            }
        }
    }
}

/// Rust intra-doc links in the doc comments utoipa copies (`` [`Foo`] ``,
/// `` [`Foo`](crate::foo) ``, `[text](crate::foo)`) become their text: the paths mean
/// nothing to a reader of the document.
fn strip_doc_links(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(text) if key == "description" || key == "summary" => {
                        *text = without_doc_links(text);
                    }
                    _ => strip_doc_links(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_doc_links),
        _ => {}
    }
}

fn without_doc_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find(']') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let label = &after[..end];
        let tail = &after[end + 1..];
        // A link target in parentheses is a Rust path when it names no URL.
        let target = tail.strip_prefix('(').and_then(|inner| {
            inner
                .find(')')
                .map(|close| (&inner[..close], &inner[close + 1..]))
        });
        match target {
            Some((path, remaining)) if !path.contains("://") && !path.starts_with('#') => {
                out.push_str(label);
                rest = remaining;
            }
            Some(_) => {
                out.push('[');
                rest = after;
            }
            None if label.starts_with('`') && label.ends_with('`') && label.len() > 1 => {
                out.push_str(label);
                rest = tail;
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `ErrorDetail` as a union discriminated by `code`: one variant per details shape (and
/// one for the codes without details), its `code` an enum of the codes that carry it, so
/// a generated client narrows `details` by `code`.
fn add_error_details(schemas: &mut serde_json::Map<String, Value>) {
    // (component, details schema, details always present, codes), in ErrorCode order.
    let mut variants: Vec<(String, Option<&str>, bool, Vec<&str>)> = Vec::new();
    for code in ErrorCode::ALL {
        let (component, details, always) = match code.details() {
            DetailsPresence::Never => ("ErrorDetailPlain".to_owned(), None, false),
            DetailsPresence::Always(name) => (format!("ErrorDetail{name}"), Some(name), true),
            DetailsPresence::Sometimes(name) => {
                (format!("ErrorDetailOptional{name}"), Some(name), false)
            }
        };
        match variants.iter_mut().find(|variant| variant.0 == component) {
            Some(variant) => variant.3.push(code.as_str()),
            None => variants.push((component, details, always, vec![code.as_str()])),
        }
    }
    let mut one_of = Vec::new();
    let mut mapping = serde_json::Map::new();
    for (component, details, always, codes) in variants {
        let listed = codes
            .iter()
            .map(|code| format!("`{code}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut required = vec!["code", "message"];
        let mut properties = json!({
            "code": { "type": "string", "enum": &codes },
            "message": { "type": "string", "description": "A human-readable explanation (not for matching)." },
        });
        let (description, mut schema) = match details {
            None => (
                format!("An error without details: {listed}."),
                json!({ "not": { "required": ["details"] } }),
            ),
            Some(name) => {
                properties["details"] = json!({ "$ref": format!("#/components/schemas/{name}") });
                if always {
                    required.push("details");
                }
                let presence = if always {
                    "always"
                } else {
                    "sometimes (see each code in docs/api.md)"
                };
                (
                    format!("An error whose details are `{name}`, {presence}: {listed}."),
                    json!({}),
                )
            }
        };
        schema["type"] = json!("object");
        schema["description"] = json!(description);
        schema["required"] = json!(required);
        schema["properties"] = properties;
        let reference = format!("#/components/schemas/{component}");
        for code in &codes {
            mapping.insert((*code).to_owned(), Value::String(reference.clone()));
        }
        one_of.push(json!({ "$ref": reference }));
        schemas.insert(component, schema);
    }
    schemas.insert(
        "ErrorDetail".to_owned(),
        json!({
            "description": "What went wrong: a stable code, a human-readable message, and details where a client can act on more than the code. One variant per details shape, chosen by `code`.",
            "oneOf": one_of,
            "discriminator": { "propertyName": "code", "mapping": mapping },
        }),
    );
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
