//! The OpenAPI document is kept true: the router is built from the annotated handlers, the
//! served document is the generated one, and `docs/openapi.json` is committed in sync
//! (regenerate with `UPDATE_OPENAPI=1 cargo test -p courier-server --test openapi`).
//! `docs/api.md` documents every error code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
