//! The plaintext inside a group (Megolm) message: the decoder never panics, and whatever
//! it accepts re-encodes to the same bytes (one plaintext, one encoding).
#![no_main]

use courier_sdk::crypto::group::GroupPlaintext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(plaintext) = GroupPlaintext::decode(data) {
        let encoded = plaintext.encode().expect("a decoded group plaintext encodes");
        assert_eq!(encoded, data);
    }
});
