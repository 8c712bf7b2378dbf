//! The key directory: signature checks, one-time keys, fallback keys, claims, and the
//! notice a device gets when claims take its one-time keys low.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{Received, TestDevice, TestServer, assert_error, random_key};
use courier_protocol::api::keys::{
    ClaimKeysResponse, KeyCountResponse, SignedKey, UserDevicesResponse,
};
use courier_protocol::api::stream::StreamItem;
use courier_protocol::keys::{decode_fixed, encode_base64};
use courier_protocol::{DeviceId, limits, signing};
use courier_server::rate_limits::RateLimitSettings;
use courier_server::{MIGRATOR, Settings};
use ed25519_dalek::{Signer, SigningKey};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

fn upload_body(keys: &[SignedKey]) -> Value {
    json!({ "oneTimeKeys": keys })
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn identity_keys_signatures_are_checked(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("alice").await;
    let device = server.new_device("alice").await;

    // Signed for another device ID of the same user: refused.
    let other_id = DeviceId::new(device.device_id.get() + 1).unwrap();
    let for_other = serde_json::to_value(device.identity_keys_for(other_id)).unwrap();
    let answer = server
        .call(
            Method::PUT,
            "/v1/keys/identity",
            Some(&device.token),
            Some(for_other),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_signature");

    // A flipped bit in the signature: refused.
    let mut keys = device.identity_keys_for(device.device_id);
    let mut signature = decode_fixed::<64>(&keys.signature).unwrap();
    signature[10] ^= 1;
    keys.signature = encode_base64(&signature);
    let answer = server
        .call(
            Method::PUT,
            "/v1/keys/identity",
            Some(&device.token),
            Some(serde_json::to_value(&keys).unwrap()),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_signature");

    // Signed by a different Ed25519 key than the one published: refused.
    let mut keys = device.identity_keys_for(device.device_id);
    keys.ed25519 = encode_base64(
        &SigningKey::generate(&mut rand::rngs::OsRng)
            .verifying_key()
            .to_bytes(),
    );
    let answer = server
        .call(
            Method::PUT,
            "/v1/keys/identity",
            Some(&device.token),
            Some(serde_json::to_value(&keys).unwrap()),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_signature");

    // Nothing was stored by the refusals.
    let (_, listed) = server
        .call(
            Method::GET,
            &format!("/v1/keys/devices/{}", device.user_id),
            Some(&device.token),
            None,
        )
        .await;
    assert_eq!(listed["devices"], json!([]));

    // The good signature: created, then idempotent.
    let good = device.identity_keys_json();
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/keys/identity",
            Some(&device.token),
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/keys/identity",
            Some(&device.token),
            Some(good.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // A different identity for the same device: refused.
    let mut impostor = server.new_device("alice").await;
    impostor.device_id = device.device_id;
    impostor.token.clone_from(&device.token);
    let answer = server
        .call(
            Method::PUT,
            "/v1/keys/identity",
            Some(&device.token),
            Some(impostor.identity_keys_json()),
        )
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "identity_keys_conflict");

    let (status, listed) = server
        .call(
            Method::GET,
            &format!("/v1/keys/devices/{}", device.user_id),
            Some(&device.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed: UserDevicesResponse = serde_json::from_value(listed).unwrap();
    assert_eq!(listed.devices.len(), 1);
    assert_eq!(
        serde_json::to_value(&listed.devices[0].identity_keys).unwrap(),
        good
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn one_time_keys_are_verified_all_or_nothing_and_idempotent(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("bob").await;
    let device = server.new_device("bob").await;

    // Before identity keys there is no key to check signatures with.
    let early = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&[device.one_time_key("k0")])),
        )
        .await;
    assert_error(&early, StatusCode::CONFLICT, "identity_keys_required");
    let (_, body) = server
        .call(
            Method::PUT,
            "/v1/keys/identity",
            Some(&device.token),
            Some(device.identity_keys_json()),
        )
        .await;
    assert_eq!(body["deviceId"], device.device_id.get());

    // One key signed by someone else spoils the batch; nothing is stored.
    let stranger = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut bad = device.one_time_key("k2");
    let key = decode_fixed::<32>(&bad.key).unwrap();
    bad.signature = encode_base64(
        &stranger
            .sign(&signing::one_time_key_payload(
                device.user_id,
                device.device_id,
                "k2",
                &key,
            ))
            .to_bytes(),
    );
    let batch = vec![device.one_time_key("k1"), bad];
    let answer = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&batch)),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_signature");
    assert_eq!(answer.1["error"]["details"]["keyId"], "k2");
    let (_, count) = server
        .call(Method::GET, "/v1/keys/count", Some(&device.token), None)
        .await;
    assert_eq!(count["oneTimeKeyCount"], 0);

    // A one-time key signature replayed as a fallback key: refused (domain separation).
    let otk = device.one_time_key("k3");
    let as_fallback = server
        .call(
            Method::PUT,
            "/v1/keys/fallback",
            Some(&device.token),
            Some(serde_json::to_value(&otk).unwrap()),
        )
        .await;
    assert_error(&as_fallback, StatusCode::BAD_REQUEST, "invalid_signature");

    // A good batch, then the same batch again: idempotent.
    let batch: Vec<SignedKey> = (0..10)
        .map(|i| device.one_time_key(&format!("key{i}")))
        .collect();
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&batch)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["oneTimeKeyCount"], 10);
    let (_, body) = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&batch)),
        )
        .await;
    assert_eq!(
        body["oneTimeKeyCount"], 10,
        "re-uploading the same key IDs stores nothing new"
    );

    // The same key ID with another key: refused, nothing changes.
    let conflicting = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&[device.one_time_key("key3")])),
        )
        .await;
    assert_error(&conflicting, StatusCode::CONFLICT, "one_time_key_conflict");
    assert_eq!(conflicting.1["error"]["details"]["keyIds"], json!(["key3"]));

    // The same key ID twice in one upload.
    let twice = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&[
                device.one_time_key("dup"),
                device.one_time_key("dup"),
            ])),
        )
        .await;
    assert_error(&twice, StatusCode::BAD_REQUEST, "duplicate_key_id");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn upload_and_storage_caps_are_enforced(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("cara").await;
    let device = server.new_published_device("cara").await;

    let too_many: Vec<SignedKey> = (0..101)
        .map(|i| device.one_time_key(&format!("k{i}")))
        .collect();
    let answer = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&too_many)),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "too_many_keys");
    assert_eq!(answer.1["error"]["details"]["max"], 100);

    for batch in 0..5 {
        let keys: Vec<SignedKey> = (0..100)
            .map(|i| device.one_time_key(&format!("b{batch}k{i}")))
            .collect();
        let (status, body) = server
            .call(
                Method::POST,
                "/v1/keys/one-time",
                Some(&device.token),
                Some(upload_body(&keys)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let over = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&[device.one_time_key("one-more")])),
        )
        .await;
    assert_error(&over, StatusCode::CONFLICT, "one_time_key_limit_reached");
    assert_eq!(
        over.1["error"]["details"],
        json!({"stored": 500, "max": 500})
    );
    let (_, count) = server
        .call(Method::GET, "/v1/keys/count", Some(&device.token), None)
        .await;
    assert_eq!(count["oneTimeKeyCount"], 500);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_claims_never_hand_out_a_one_time_key_twice(pool: PgPool) {
    // 50 claims of one device at once are past the per-target rate limit (which would
    // serve the fallback key early, tests/rate_limits.rs); this test is about the claims'
    // concurrency, so without limits.
    let server = TestServer::start_with(
        pool,
        Settings {
            rate_limits: RateLimitSettings::off(),
            ..Settings::default()
        },
    )
    .await;
    server.create_account("dana").await;
    server.create_account("eve").await;
    let target = server.new_published_device("dana").await;
    let claimer = server.new_published_device("eve").await;

    let keys: Vec<SignedKey> = (0..20)
        .map(|i| target.one_time_key(&format!("otk{i}")))
        .collect();
    let (status, _) = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&target.token),
            Some(upload_body(&keys)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let fallback = target.fallback_key("fb1");
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/keys/fallback",
            Some(&target.token),
            Some(serde_json::to_value(&fallback).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["fallbackKeyId"], "fb1");

    let claim = json!({ "devices": [{ "userId": target.user_id, "deviceId": target.device_id }] });
    let answers = futures::future::join_all((0..50).map(|_| {
        server.call(
            Method::POST,
            "/v1/keys/claim",
            Some(&claimer.token),
            Some(claim.clone()),
        )
    }))
    .await;

    let mut one_time_ids = HashSet::new();
    let mut fallbacks = 0;
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: ClaimKeysResponse = serde_json::from_value(body).unwrap();
        assert_eq!(answer.keys.len(), 1);
        assert!(answer.unavailable.is_empty());
        let claimed = &answer.keys[0];
        if claimed.fallback {
            assert_eq!(claimed.key, fallback);
            fallbacks += 1;
        } else {
            assert!(
                one_time_ids.insert(claimed.key.key_id.clone()),
                "key {} handed out twice",
                claimed.key.key_id
            );
            let sent = keys
                .iter()
                .find(|key| key.key_id == claimed.key.key_id)
                .unwrap();
            assert_eq!(
                &claimed.key, sent,
                "the claimed key is the uploaded key with its signature"
            );
        }
    }
    assert_eq!(
        one_time_ids.len(),
        20,
        "every one-time key handed out exactly once"
    );
    assert_eq!(fallbacks, 30, "then the fallback key");

    let (_, count) = server
        .call(Method::GET, "/v1/keys/count", Some(&target.token), None)
        .await;
    assert_eq!(count, json!({"oneTimeKeyCount": 0, "fallbackKeyId": "fb1"}));

    // A claimed key re-uploaded stays claimed: never handed out again.
    let (_, body) = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&target.token),
            Some(upload_body(&keys[..1])),
        )
        .await;
    let count: KeyCountResponse = serde_json::from_value(body).unwrap();
    assert_eq!(count.one_time_key_count, 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn claims_report_devices_with_nothing_and_replace_fallbacks(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("fred").await;
    let with_otk = server.new_published_device("fred").await;
    let bare = server.new_published_device("fred").await;
    let with_fallback = server.new_published_device("fred").await;

    let (status, _) = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&with_otk.token),
            Some(upload_body(&[with_otk.one_time_key("a")])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = with_fallback.fallback_key("f1");
    server
        .call(
            Method::PUT,
            "/v1/keys/fallback",
            Some(&with_fallback.token),
            Some(serde_json::to_value(&first).unwrap()),
        )
        .await;
    let second = with_fallback.fallback_key("f2");
    let (_, body) = server
        .call(
            Method::PUT,
            "/v1/keys/fallback",
            Some(&with_fallback.token),
            Some(serde_json::to_value(&second).unwrap()),
        )
        .await;
    assert_eq!(
        body["fallbackKeyId"], "f2",
        "the fallback key is replaceable"
    );

    let stranger = uuid::Uuid::new_v4();
    let request = json!({ "devices": [
        { "userId": with_otk.user_id, "deviceId": with_otk.device_id },
        { "userId": bare.user_id, "deviceId": bare.device_id },
        { "userId": with_fallback.user_id, "deviceId": with_fallback.device_id },
        { "userId": with_otk.user_id, "deviceId": with_otk.device_id },
        { "userId": with_otk.user_id, "deviceId": 77 },
        { "userId": stranger, "deviceId": 1 },
    ]});
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/keys/claim",
            Some(&bare.token),
            Some(request),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: ClaimKeysResponse = serde_json::from_value(body).unwrap();
    assert_eq!(answer.keys.len(), 2, "a device named twice is claimed once");
    assert_eq!(answer.keys[0].device_id, with_otk.device_id);
    assert!(!answer.keys[0].fallback);
    assert_eq!(answer.keys[1].device_id, with_fallback.device_id);
    assert!(answer.keys[1].fallback);
    assert_eq!(answer.keys[1].key, second);
    let unavailable: Vec<(String, u32)> = answer
        .unavailable
        .iter()
        .map(|d| (d.user_id.to_string(), d.device_id.get()))
        .collect();
    assert_eq!(
        unavailable,
        vec![
            (bare.user_id.to_string(), bare.device_id.get()),
            (with_otk.user_id.to_string(), 77),
            (stranger.to_string(), 1),
        ]
    );
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_directory_lists_only_reachable_devices_and_unknown_users_are_404(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("gus").await;
    let published = server.new_published_device("gus").await;
    let _unpublished = server.new_device("gus").await;
    let (_, body) = server
        .call(
            Method::GET,
            &format!("/v1/keys/devices/{}", published.user_id),
            Some(&published.token),
            None,
        )
        .await;
    let listed: UserDevicesResponse = serde_json::from_value(body).unwrap();
    assert_eq!(
        listed
            .devices
            .iter()
            .map(|d| d.device_id)
            .collect::<Vec<_>>(),
        vec![published.device_id]
    );

    let unknown = server
        .call(
            Method::GET,
            &format!("/v1/keys/devices/{}", uuid::Uuid::new_v4()),
            Some(&published.token),
            None,
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "user_not_found");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn keys_with_bad_encodings_get_field_level_errors(pool: PgPool) {
    let server = TestServer::start(pool).await;
    server.create_account("hal").await;
    let device = server.new_published_device("hal").await;
    let good = device.one_time_key("ok");
    let cases = [
        (
            SignedKey {
                key: "!!!".into(),
                ..good.clone()
            },
            "invalid_base64",
            "oneTimeKeys[0].key",
        ),
        (
            SignedKey {
                key: encode_base64(&[1; 31]),
                ..good.clone()
            },
            "invalid_key_length",
            "oneTimeKeys[0].key",
        ),
        (
            SignedKey {
                signature: encode_base64(&[1; 65]),
                ..good.clone()
            },
            "invalid_key_length",
            "oneTimeKeys[0].signature",
        ),
        (
            SignedKey {
                key_id: "bad id".into(),
                ..good.clone()
            },
            "invalid_key_id",
            "oneTimeKeys[0].keyId",
        ),
        (
            SignedKey {
                key: encode_base64(&random_key()),
                ..good.clone()
            },
            "invalid_signature",
            "oneTimeKeys[0].signature",
        ),
    ];
    for (key, code, field) in cases {
        let answer = server
            .call(
                Method::POST,
                "/v1/keys/one-time",
                Some(&device.token),
                Some(upload_body(&[key])),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, code);
        assert_eq!(answer.1["error"]["details"]["field"], field);
    }
    let (_, count) = server
        .call(Method::GET, "/v1/keys/count", Some(&device.token), None)
        .await;
    assert_eq!(count["oneTimeKeyCount"], 0);
}

/// The `oneTimeKeysLow` notices in a device's undelivered stream, as `(seq, count)`.
async fn low_notices(server: &TestServer, device: &TestDevice) -> Vec<(u64, u32)> {
    server
        .inbox(device)
        .await
        .into_iter()
        .filter_map(|item| match item {
            StreamItem::OneTimeKeysLow { seq, count } => Some((seq, count)),
            _ => None,
        })
        .collect()
}

/// One claim of `target` by `claimer`; whether it was served a one-time key.
async fn claim_one(server: &TestServer, claimer: &TestDevice, target: &TestDevice) -> bool {
    let claim = json!({ "devices": [{ "userId": target.user_id, "deviceId": target.device_id }] });
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/keys/claim",
            Some(&claimer.token),
            Some(claim),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: ClaimKeysResponse = serde_json::from_value(body).unwrap();
    answer.keys.first().is_some_and(|key| !key.fallback)
}

async fn upload_keys(server: &TestServer, device: &TestDevice, ids: std::ops::Range<u32>) -> u32 {
    let keys: Vec<SignedKey> = ids
        .map(|i| device.one_time_key(&format!("otk{i}")))
        .collect();
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/keys/one-time",
            Some(&device.token),
            Some(upload_body(&keys)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value::<KeyCountResponse>(body)
        .unwrap()
        .one_time_key_count
}

fn without_rate_limits() -> Settings {
    // Claims past the per-target rate limit are served the fallback key first; these
    // tests count one-time keys, so without limits.
    Settings {
        rate_limits: RateLimitSettings::off(),
        ..Settings::default()
    }
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_claim_below_the_threshold_tells_the_device_once_until_an_upload_rearms(pool: PgPool) {
    let threshold = limits::ONE_TIME_KEYS_LOW_THRESHOLD;
    let server = TestServer::start_with(pool, without_rate_limits()).await;
    server.create_account("dana").await;
    server.create_account("eve").await;
    let target = server.new_published_device("dana").await;
    let claimer = server.new_published_device("eve").await;
    assert_eq!(
        upload_keys(&server, &target, 0..threshold + 2).await,
        threshold + 2
    );
    let mut socket = server.connect(&target.token, None).await;
    assert!(matches!(socket.next().await, Received::CaughtUp(_)));

    // Down to exactly the threshold: nothing.
    for _ in 0..2 {
        assert!(claim_one(&server, &claimer, &target).await);
    }
    assert_eq!(low_notices(&server, &target).await, []);

    // The claim that crosses it: one item, with the count left, pushed to the socket.
    assert!(claim_one(&server, &claimer, &target).await);
    let notices = low_notices(&server, &target).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].1, threshold - 1);
    match socket.next().await {
        Received::Item(item) => assert_eq!(
            item,
            StreamItem::OneTimeKeysLow {
                seq: notices[0].0,
                count: threshold - 1
            }
        ),
        other => panic!("expected the notice on the socket, got {other:?}"),
    }

    // Further claims, and an upload that stays below the threshold: no second notice.
    assert!(claim_one(&server, &claimer, &target).await);
    assert_eq!(upload_keys(&server, &target, 100..101).await, threshold - 1);
    assert!(claim_one(&server, &claimer, &target).await);
    assert_eq!(low_notices(&server, &target).await, notices);

    // An upload back to the threshold re-arms it: the next crossing tells again.
    assert_eq!(upload_keys(&server, &target, 200..202).await, threshold);
    assert!(claim_one(&server, &claimer, &target).await);
    let again = low_notices(&server, &target).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[0], notices[0]);
    assert_eq!(again[1].1, threshold - 1);
    assert!(again[1].0 > notices[0].0);

    // Claims of a device with no one-time keys left (the fallback, or nothing) send none.
    while claim_one(&server, &claimer, &target).await {}
    assert_eq!(low_notices(&server, &target).await.len(), 2);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn concurrent_claims_across_the_threshold_send_one_notice(pool: PgPool) {
    let threshold = limits::ONE_TIME_KEYS_LOW_THRESHOLD;
    let server = TestServer::start_with(pool, without_rate_limits()).await;
    server.create_account("dana").await;
    let target = server.new_published_device("dana").await;
    let mut claimers = Vec::new();
    for name in ["eve", "finn", "gale", "hugo", "iris"] {
        server.create_account(name).await;
        claimers.push(server.new_published_device(name).await);
    }
    let stored = threshold + 8;
    assert_eq!(upload_keys(&server, &target, 0..stored).await, stored);

    // 40 claims at once from five users, of one device with 20 keys.
    let served = futures::future::join_all(
        (0..40).map(|i| claim_one(&server, &claimers[i % claimers.len()], &target)),
    )
    .await;
    assert_eq!(
        served.iter().filter(|served| **served).count(),
        stored as usize
    );

    let notices = low_notices(&server, &target).await;
    assert_eq!(notices.len(), 1, "one notice for one crossing: {notices:?}");
    assert_eq!(
        notices[0].1,
        threshold - 1,
        "the claim that crossed counted every earlier claim"
    );
}
