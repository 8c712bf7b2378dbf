//! The SDK's plaintext decoder: never panics, and whatever it accepts re-encodes to the
//! same bytes (one plaintext, one encoding).
#![no_main]

use courier_sdk::crypto::payload::Payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = Payload::decode(data) {
        let encoded = payload.encode().expect("a decoded payload encodes");
        assert_eq!(encoded, data);
    }
});
