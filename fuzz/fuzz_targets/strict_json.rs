//! Strict JSON parsing (every request body and client frame the server reads): never
//! panics, refuses only what serde_json also refuses or what has an array where an object
//! belongs, gives serde_json's value whenever it accepts, and calls a refused text a syntax
//! error exactly when it is not JSON.
#![no_main]

use std::fmt::Debug;

use courier_protocol::api::keys::ClaimKeysRequest;
use courier_protocol::api::messages::SendMessageRequest;
use courier_protocol::api::receipts::UpdatePrivacySettings;
use courier_protocol::api::stream::ClientFrame;
use courier_protocol::strict_json::{self, StrictJsonError};
use libfuzzer_sys::fuzz_target;
use serde::de::{DeserializeOwned, IgnoredAny};

fn check<T: DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let strict = strict_json::from_slice::<T>(data);
    let plain = serde_json::from_slice::<T>(data);
    match &strict {
        Ok(value) => assert_eq!(Some(value), plain.as_ref().ok()),
        Err(error) => {
            let is_json = std::str::from_utf8(data)
                .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
            assert_eq!(
                matches!(error, StrictJsonError::Syntax(_)),
                !is_json,
                "{error}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<serde_json::Value>(data);
    check::<SendMessageRequest>(data);
    check::<ClientFrame>(data);
    check::<ClaimKeysRequest>(data);
    check::<UpdatePrivacySettings>(data);
});
