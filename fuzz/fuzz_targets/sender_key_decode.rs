//! A sender-key body (a Megolm session ID and its signed session key, received over Olm):
//! the decoder never panics, and whatever it accepts re-encodes to the same bytes.
#![no_main]

use courier_sdk::crypto::group::SenderKeyBody;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = SenderKeyBody::decode(data) {
        assert_eq!(body.encode().as_slice(), data);
    }
});
