//! The protocol's base64 key decoding (every key and signature the server and SDK take
//! in): never panics, and a fixed-length decode agrees with the plain one.
#![no_main]

use courier_protocol::keys::{decode_base64, decode_fixed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let plain = decode_base64(text);
    let fixed = decode_fixed::<32>(text);
    match (&plain, &fixed) {
        (Ok(bytes), Ok(key)) => assert_eq!(bytes.as_slice(), key.as_slice()),
        (Ok(bytes), Err(_)) => assert_ne!(bytes.len(), 32),
        (Err(_), Ok(_)) => panic!("fixed decode accepted what plain decode refused"),
        (Err(_), Err(_)) => {}
    }
});
