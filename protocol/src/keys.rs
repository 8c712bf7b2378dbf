//! Public keys and signatures as they travel: unpadded standard base64 (the encoding
//! vodozemac uses); padded input is accepted too.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Encodes unpadded, decodes padded or unpadded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Length of a Curve25519 public key, in bytes.
pub const CURVE25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 public key, in bytes.
pub const ED25519_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature, in bytes.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// The longest base64 text of `bytes` bytes: the padded encoding (the unpadded one is at
/// most two characters shorter). Longer text cannot decode to `bytes` bytes or fewer.
pub const fn max_base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// Encodes bytes as unpadded standard base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Decodes base64 (standard alphabet, padding optional).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, KeyDecodeError> {
    BASE64
        .decode(text)
        .map_err(|_| KeyDecodeError::InvalidBase64)
}

/// Decodes a base64 field that must hold exactly `N` bytes (a key or a signature).
pub fn decode_fixed<const N: usize>(text: &str) -> Result<[u8; N], KeyDecodeError> {
    let bytes = decode_base64(text)?;
    let actual = bytes.len();
    bytes.try_into().map_err(|_| KeyDecodeError::WrongLength {
        expected: N,
        actual,
    })
}

/// Why a base64 key or signature field could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyDecodeError {
    /// The text is not standard base64.
    #[error("not valid base64")]
    InvalidBase64,
    /// The text decodes to the wrong number of bytes.
    #[error("decodes to {actual} bytes, expected {expected}")]
    WrongLength {
        /// The length the field must have.
        expected: usize,
        /// The length it had.
        actual: usize,
    },
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = encode_base64(&bytes);
            prop_assert!(!text.ends_with('='));
            prop_assert_eq!(decode_base64(&text).unwrap(), bytes);
        }

        #[test]
        fn fixed_decoding_checks_length(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let text = encode_base64(&bytes);
            let decoded = decode_fixed::<32>(&text);
            if bytes.len() == 32 {
                prop_assert_eq!(decoded.unwrap().to_vec(), bytes);
            } else {
                prop_assert_eq!(decoded, Err(KeyDecodeError::WrongLength { expected: 32, actual: bytes.len() }));
            }
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,100}") {
            let _ = decode_base64(&text);
        }
    }

    #[test]
    fn padded_input_is_accepted_and_garbage_is_not() {
        assert_eq!(decode_base64("AQ==").unwrap(), vec![1]);
        assert_eq!(decode_base64("AQ").unwrap(), vec![1]);
        assert_eq!(
            decode_base64("not base64!"),
            Err(KeyDecodeError::InvalidBase64)
        );
    }
}
