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
    assert_eq!(
        served,
        serde_json::to_value(courier_server::router::openapi()).unwrap()
    );

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
