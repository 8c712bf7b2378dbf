//! The OpenAPI document is kept true: the router is built from the annotated handlers, the
//! served document is the generated one, and `docs/openapi.json` is committed in sync
//! (regenerate with `UPDATE_OPENAPI=1 cargo test -p courier-server --test openapi`).
//! `docs/api.md` documents every error code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/schema.rs"]
mod schema;

use common::TestServer;
use courier_protocol::ErrorCode;
use courier_server::MIGRATOR;
use reqwest::Method;
use sqlx::PgPool;

fn docs_path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file)
}

#[test]
fn committed_openapi_document_matches_the_code() {
    let generated =
        serde_json::to_string_pretty(&courier_server::router::openapi()).unwrap() + "\n";
    let path = docs_path("openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date; run `UPDATE_OPENAPI=1 cargo test -p courier-server --test openapi` and commit it"
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_served_document_lists_every_route_the_server_answers(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let (status, served) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert!(status.is_success());
    assert_eq!(served, courier_server::router::openapi());

    let paths = served["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/accounts", vec!["post"]),
        ("/v1/login", vec!["post"]),
        ("/v1/devices", vec!["get"]),
        ("/v1/devices/{deviceId}", vec!["delete"]),
        ("/v1/keys/identity", vec!["put"]),
        ("/v1/keys/one-time", vec!["post"]),
        ("/v1/keys/fallback", vec!["put"]),
        ("/v1/keys/count", vec!["get"]),
        ("/v1/keys/devices/{userId}", vec!["get"]),
        ("/v1/keys/claim", vec!["post"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} missing from the document"
            );
        }
    }

    // Every documented operation is routed: calling it never hits the 404 fallback.
    for (path, operations) in paths {
        let concrete = path
            .replace("{deviceId}", "1")
            .replace("{userId}", &uuid::Uuid::nil().to_string());
        for method in operations.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (_, body) = server.call(method.clone(), &concrete, None, None).await;
            assert_ne!(
                body["error"]["code"], "not_found",
                "{method} {path} is documented but not routed"
            );
            assert_ne!(
                body["error"]["code"], "method_not_allowed",
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[test]
fn api_docs_explain_every_error_code() {
    let api_md = std::fs::read_to_string(docs_path("api.md")).unwrap();
    for code in ErrorCode::ALL {
        let needle = format!("`{}`", code.as_str());
        assert!(
            api_md.contains(&needle),
            "docs/api.md does not document {needle}"
        );
    }
}

/// The error codes the document lists are the wire forms the server sends: a generated
/// client decodes every error body (it listed the Rust names once).
#[sqlx::test(migrator = "MIGRATOR")]
async fn the_documented_error_codes_are_the_ones_responses_carry(pool: PgPool) {
    let server = TestServer::start(pool).await;
    let (_, served) = server.call(Method::GET, "/openapi.json", None, None).await;
    let documented: Vec<&str> = served["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .map(|code| code.as_str().expect("a string"))
        .collect();
    let sent: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(documented, sent);

    // Real responses: no token, and a route that does not exist.
    for path in ["/v1/inbox", "/v1/no-such-route"] {
        let (status, body) = server.call(Method::GET, path, None, None).await;
        assert!(status.is_client_error(), "{path}: {status}");
        let code = body["error"]["code"].as_str().expect("an error code");
        assert!(
            documented.contains(&code),
            "{path} answered {code}, which the document does not list"
        );
    }
}

/// A read state's conversation is documented with the property names it is sent with.
#[test]
fn the_conversation_schema_names_the_wire_properties() {
    use courier_protocol::api::receipts::Conversation;
    let document = courier_server::router::openapi();
    // Each variant is its own component (the union has a discriminator).
    let variants: Vec<serde_json::Value> =
        document["components"]["schemas"]["Conversation"]["oneOf"]
            .as_array()
            .expect("Conversation is a oneOf")
            .iter()
            .map(|variant| match variant["$ref"].as_str() {
                Some(reference) => document
                    .pointer(reference.trim_start_matches('#'))
                    .expect("the reference resolves")
                    .clone(),
                None => variant.clone(),
            })
            .collect();
    let values = [
        Conversation::Direct {
            user_id: courier_protocol::UserId::from(uuid::Uuid::nil()),
        },
        Conversation::Channel {
            channel_id: uuid::Uuid::nil(),
        },
    ];
    for value in values {
        let wire = serde_json::to_value(value).unwrap();
        let kind = wire["kind"].as_str().unwrap();
        let schema = variants
            .iter()
            .find(|variant| variant["properties"]["kind"]["enum"][0] == kind)
            .unwrap_or_else(|| panic!("no variant for {kind}"));
        for property in wire.as_object().unwrap().keys() {
            assert!(
                schema["properties"].get(property).is_some(),
                "{kind}: the wire sends {property}, the document does not name it"
            );
        }
        for required in schema["required"].as_array().unwrap() {
            assert!(
                wire.get(required.as_str().unwrap()).is_some(),
                "{kind}: the document requires {required}, the wire does not send it"
            );
        }
    }
}

/// Every operation's request body and success answer carries an example, and each
/// validates against its schema (generators and readers show them).
#[test]
fn every_request_and_success_answer_has_a_valid_example() {
    let schemas = schema::Schemas::new(courier_server::router::openapi());
    let paths = schemas.document["paths"].as_object().unwrap().clone();
    let mut checked = 0;
    for (template, item) in &paths {
        for (method, operation) in item.as_object().unwrap() {
            let base = schema::operation_pointer(method, template);
            let id = operation["operationId"].as_str().unwrap();
            if operation.get("requestBody").is_some() {
                let example = operation
                    .pointer("/requestBody/content/application~1json/example")
                    .unwrap_or_else(|| panic!("{id}: the request body has no example"));
                schemas.assert_valid(
                    &schema::request_schema(method, template),
                    example,
                    &format!("{id}'s request example"),
                );
                checked += 1;
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.parse::<u16>().unwrap() >= 400 || response.get("content").is_none() {
                    continue;
                }
                let content = &response["content"]["application/json"];
                let example = content
                    .get("example")
                    .unwrap_or_else(|| panic!("{id}: the {status} answer has no example"));
                schemas.assert_valid(
                    &format!("{base}/responses/{status}/content/application~1json/schema"),
                    example,
                    &format!("{id}'s {status} example"),
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} examples");
}

/// Every description in the document, with where it is.
fn descriptions(value: &serde_json::Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let here = format!("{at}/{key}");
                match value {
                    serde_json::Value::String(text) if key == "description" || key == "summary" => {
                        found.push((here, text.clone()));
                    }
                    _ => descriptions(value, &here, found),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                descriptions(item, &format!("{at}/{index}"), found);
            }
        }
        _ => {}
    }
}

/// Doc comments become descriptions: Rust intra-doc links (`[`Foo`]`, `(crate::...)`)
/// mean nothing to a reader of the document and are gone.
#[test]
fn no_description_carries_a_rust_doc_link() {
    let mut found = Vec::new();
    descriptions(&courier_server::router::openapi(), "", &mut found);
    assert!(found.len() > 100, "only {} descriptions", found.len());
    for (at, text) in found {
        assert!(!text.contains("crate::"), "{at}: {text}");
        let mut rest = text.as_str();
        while let Some(start) = rest.find("[`") {
            let after = &rest[start + 2..];
            let closed = after
                .find('`')
                .is_some_and(|end| after[end + 1..].starts_with(']'));
            assert!(!closed, "{at}: an intra-doc link in {text:?}");
            rest = after;
        }
    }
}

/// Every response says what it is: generators make doc comments of the descriptions.
#[test]
fn every_response_has_a_description() {
    let document = courier_server::router::openapi();
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let description = response["description"].as_str().unwrap_or_default();
                assert!(
                    !description.trim().is_empty(),
                    "{method} {template} {status} has no description"
                );
            }
        }
    }
}

/// Error details are a union discriminated by `code`: every code maps to exactly one
/// variant, whose `code` enum lists it and whose `details` is the code's schema; the
/// per-status narrowing schemas require the code they narrow.
#[test]
fn error_details_are_a_union_discriminated_by_code() {
    use courier_protocol::api::errors::DetailsPresence;
    let document = courier_server::router::openapi();
    let detail = &document["components"]["schemas"]["ErrorDetail"];
    assert_eq!(detail["discriminator"]["propertyName"], "code");
    let mapping = detail["discriminator"]["mapping"].as_object().unwrap();
    assert_eq!(mapping.len(), ErrorCode::ALL.len());
    for code in ErrorCode::ALL {
        let reference = mapping[code.as_str()].as_str().unwrap();
        assert!(
            detail["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .any(|variant| variant["$ref"] == reference),
            "{reference} is not a variant"
        );
        let variant = document.pointer(reference.trim_start_matches('#')).unwrap();
        let codes = variant["properties"]["code"]["enum"].as_array().unwrap();
        assert!(
            codes.iter().any(|listed| listed == code.as_str()),
            "{code:?}"
        );
        let required: Vec<&str> = variant["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        let details = variant["properties"]["details"]["$ref"].as_str();
        match code.details() {
            DetailsPresence::Never => {
                assert_eq!(details, None, "{code:?}");
                assert_eq!(variant["not"]["required"][0], "details", "{code:?}");
            }
            DetailsPresence::Always(name) => {
                assert_eq!(
                    details,
                    Some(format!("#/components/schemas/{name}").as_str())
                );
                assert!(required.contains(&"details"), "{code:?}");
            }
            DetailsPresence::Sometimes(name) => {
                assert_eq!(
                    details,
                    Some(format!("#/components/schemas/{name}").as_str())
                );
                assert!(!required.contains(&"details"), "{code:?}");
            }
        }
    }

    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.parse::<u16>().unwrap() < 400 {
                    continue;
                }
                let narrowed = &response["content"]["application/json"]["schema"]["allOf"][1];
                assert_eq!(
                    narrowed["required"],
                    serde_json::json!(["error"]),
                    "{method} {template} {status}"
                );
                assert_eq!(
                    narrowed["properties"]["error"]["required"],
                    serde_json::json!(["code"]),
                    "{method} {template} {status}"
                );
            }
        }
    }
}
