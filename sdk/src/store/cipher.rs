//! The keys derived from a [`StoreKey`], value encryption, and the keyed hashing that
//! keeps lookup keys out of the database file.

use std::fmt;

use chacha20poly1305::aead::rand_core::RngCore as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::secret::{SecretBytes, StoreKey};

/// HKDF info of the value-encryption key.
const VALUE_ENCRYPTION_INFO: &[u8] = b"courier-sdk:store:value-encryption:v1";
/// HKDF info of the key-hashing key.
const KEY_HASHING_INFO: &[u8] = b"courier-sdk:store:key-hashing:v1";

/// The first byte of every stored value; also part of its associated data.
const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Length of the per-store HKDF salt.
pub(crate) const SALT_LEN: usize = 32;

/// Associated-data purposes, so a key-check value can never pass for an item or back.
const PURPOSE_ITEM: u8 = 1;
const PURPOSE_KEY_CHECK: u8 = 2;
/// Hash domains, so a partition hash never equals an item hash.
const DOMAIN_PARTITION: &[u8] = b"partition";
const DOMAIN_ITEM: &[u8] = b"item";

/// The keyed hash of a partition or item key: what the database holds instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyHash([u8; 32]);

impl KeyHash {
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a hash back from its column; `None` if it has the wrong length.
    pub(crate) fn from_column(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

/// Where a value is stored, which its associated data binds it to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Location<'a> {
    /// An item in the `items` table.
    Item {
        collection: &'a str,
        partition: &'a KeyHash,
        item: &'a KeyHash,
    },
    /// The key-check value in the `meta` table.
    KeyCheck,
}

/// Value encryption and key hashing under the sub-keys of one store.
pub(crate) struct StoreCipher {
    /// XChaCha20-Poly1305 zeroizes its key when dropped.
    value_cipher: XChaCha20Poly1305,
    /// Kept raw and keyed per use: `hmac` 0.12 does not zeroize its state.
    hashing_key: Zeroizing<[u8; 32]>,
}

impl StoreCipher {
    /// Derives the sub-keys from the store key and the store's salt (random per store,
    /// so two stores under one key share neither hashes nor movable values).
    pub(crate) fn new(key: &StoreKey, salt: &[u8]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(salt), key.as_bytes());
        let derive = |info: &[u8]| {
            let mut sub_key = Zeroizing::new([0u8; 32]);
            if hkdf.expand(info, sub_key.as_mut_slice()).is_err() {
                unreachable!("32 bytes is within HKDF-SHA256's output limit");
            }
            sub_key
        };
        let value_key = derive(VALUE_ENCRYPTION_INFO);
        Self {
            value_cipher: XChaCha20Poly1305::new(Key::from_slice(value_key.as_slice())),
            hashing_key: derive(KEY_HASHING_INFO),
        }
    }

    /// The hash a partition key is stored under.
    pub(crate) fn hash_partition(&self, collection: &str, partition: &[u8]) -> KeyHash {
        self.hash(&[DOMAIN_PARTITION, collection.as_bytes(), partition])
    }

    /// The hash an item key is stored under. It covers the partition too, so one item key
    /// in two partitions (or collections) cannot be linked.
    pub(crate) fn hash_item(&self, collection: &str, partition: &[u8], item: &[u8]) -> KeyHash {
        self.hash(&[DOMAIN_ITEM, collection.as_bytes(), partition, item])
    }

    /// HMAC-SHA256 over length-prefixed parts, so ("ab", "c") and ("a", "bc") differ.
    fn hash(&self, parts: &[&[u8]]) -> KeyHash {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.hashing_key.as_slice()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        KeyHash(mac.finalize().into_bytes().into())
    }

    /// Encrypts a value for `location` under a fresh random nonce:
    /// version byte || nonce || ciphertext and tag.
    pub(crate) fn encrypt(
        &self,
        location: Location<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        let mut nonce = XNonce::default();
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| CipherError::Randomness)?;
        let ciphertext = self
            .value_cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &associated_data(location),
                },
            )
            .map_err(|_| CipherError::TooLarge)?;
        let mut stored = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        stored.push(FORMAT_VERSION);
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&ciphertext);
        Ok(stored)
    }

    /// Decrypts a value stored at `location`.
    pub(crate) fn decrypt(
        &self,
        location: Location<'_>,
        stored: &[u8],
    ) -> Result<SecretBytes, CipherError> {
        let Some((&version, rest)) = stored.split_first() else {
            return Err(CipherError::Malformed);
        };
        if version != FORMAT_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(CipherError::Malformed);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.value_cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(location),
                },
            )
            .map(SecretBytes::from)
            .map_err(|_| CipherError::DecryptionFailed)
    }
}

impl fmt::Debug for StoreCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCipher(<redacted>)")
    }
}

/// The associated data of a value: format version, purpose, and for an item the
/// length-prefixed collection name and the partition and item hashes.
fn associated_data(location: Location<'_>) -> Vec<u8> {
    let mut aad = vec![FORMAT_VERSION];
    match location {
        Location::Item {
            collection,
            partition,
            item,
        } => {
            aad.push(PURPOSE_ITEM);
            aad.extend_from_slice(&(collection.len() as u64).to_be_bytes());
            aad.extend_from_slice(collection.as_bytes());
            aad.extend_from_slice(partition.as_bytes());
            aad.extend_from_slice(item.as_bytes());
        }
        Location::KeyCheck => aad.push(PURPOSE_KEY_CHECK),
    }
    aad
}

/// Why a value could not be encrypted or decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CipherError {
    /// The tag did not verify: another key, a changed value, or a value moved from
    /// another location.
    #[error("the value does not decrypt at this location")]
    DecryptionFailed,
    /// The stored bytes are too short or carry an unknown format version.
    #[error("the stored value is malformed")]
    Malformed,
    /// The value is larger than XChaCha20-Poly1305 can encrypt.
    #[error("the value is too large to encrypt")]
    TooLarge,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cipher(key: [u8; 32]) -> StoreCipher {
        StoreCipher::new(&StoreKey::from_bytes(key), &[3u8; SALT_LEN])
    }

    /// A collection name from a small set, since collections are `&'static str`.
    fn collection() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["account", "olm_sessions", "devices", "cursor", ""])
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    fn encrypt_at(
        cipher: &StoreCipher,
        (collection, partition, item): (&str, &[u8], &[u8]),
        value: &[u8],
    ) -> Vec<u8> {
        let partition_hash = cipher.hash_partition(collection, partition);
        let item_hash = cipher.hash_item(collection, partition, item);
        let location = Location::Item {
            collection,
            partition: &partition_hash,
            item: &item_hash,
        };
        cipher.encrypt(location, value).unwrap()
    }

    fn decrypt_at(
        cipher: &StoreCipher,
        (collection, partition, item): (&str, &[u8], &[u8]),
        stored: &[u8],
    ) -> Result<SecretBytes, CipherError> {
        let partition_hash = cipher.hash_partition(collection, partition);
        let item_hash = cipher.hash_item(collection, partition, item);
        let location = Location::Item {
            collection,
            partition: &partition_hash,
            item: &item_hash,
        };
        cipher.decrypt(location, stored)
    }

    proptest! {
        #[test]
        fn values_round_trip(
            key in any::<[u8; 32]>(),
            collection in collection(),
            partition in bytes(40),
            item in bytes(40),
            value in bytes(1000),
        ) {
            let cipher = cipher(key);
            let at = (collection, partition.as_slice(), item.as_slice());
            let stored = encrypt_at(&cipher, at, &value);
            prop_assert_eq!(stored.len(), 1 + NONCE_LEN + value.len() + TAG_LEN);
            let decrypted = decrypt_at(&cipher, at, &stored).unwrap();
            prop_assert_eq!(decrypted.as_bytes(), &value[..]);
        }

        #[test]
        fn a_value_does_not_decrypt_at_another_location(
            key in any::<[u8; 32]>(),
            from in (collection(), bytes(8), bytes(8)),
            to in (collection(), bytes(8), bytes(8)),
            value in bytes(100),
        ) {
            prop_assume!(from != to);
            let cipher = cipher(key);
            let stored = encrypt_at(&cipher, (from.0, &from.1, &from.2), &value);
            prop_assert_eq!(
                decrypt_at(&cipher, (to.0, &to.1, &to.2), &stored).err(),
                Some(CipherError::DecryptionFailed)
            );
        }

        #[test]
        fn a_value_does_not_decrypt_under_another_key(
            key in any::<[u8; 32]>(),
            other_key in any::<[u8; 32]>(),
            value in bytes(100),
        ) {
            prop_assume!(key != other_key);
            let at = ("devices", &b"@alice"[..], &b"device-1"[..]);
            let stored = encrypt_at(&cipher(key), at, &value);
            prop_assert!(decrypt_at(&cipher(other_key), at, &stored).is_err());
        }

        #[test]
        fn any_changed_byte_is_detected(
            value in bytes(100),
            position in any::<prop::sample::Index>(),
            flip in 1..=255u8,
        ) {
            let cipher = cipher([1; 32]);
            let at = ("devices", &b"@alice"[..], &b"device-1"[..]);
            let mut stored = encrypt_at(&cipher, at, &value);
            let position = position.index(stored.len());
            stored[position] ^= flip;
            prop_assert!(decrypt_at(&cipher, at, &stored).is_err());
        }

        #[test]
        fn truncated_values_are_refused_without_panicking(value in bytes(60)) {
            let cipher = cipher([1; 32]);
            let at = ("devices", &b"@alice"[..], &b"device-1"[..]);
            prop_assert!(decrypt_at(&cipher, at, &value).is_err());
        }
    }

    #[test]
    fn hashes_separate_their_parts_domains_and_keys() {
        let cipher = cipher([1; 32]);
        assert_ne!(
            cipher.hash_item("c", b"ab", b"c"),
            cipher.hash_item("c", b"a", b"bc")
        );
        assert_ne!(
            cipher.hash_item("c", b"p", b"i"),
            cipher.hash_item("d", b"p", b"i")
        );
        assert_ne!(
            cipher.hash_partition("c", b"p"),
            cipher.hash_item("c", b"p", b"")
        );
        assert_eq!(
            cipher.hash_partition("c", b"p"),
            cipher.hash_partition("c", b"p")
        );
        assert_ne!(
            cipher.hash_partition("c", b"p"),
            self::cipher([2; 32]).hash_partition("c", b"p")
        );
        let other_salt = StoreCipher::new(&StoreKey::from_bytes([1; 32]), &[4u8; SALT_LEN]);
        assert_ne!(
            cipher.hash_partition("c", b"p"),
            other_salt.hash_partition("c", b"p")
        );
    }

    #[test]
    fn each_encryption_uses_a_fresh_nonce() {
        let cipher = cipher([1; 32]);
        let at = ("devices", &b"@alice"[..], &b"device-1"[..]);
        assert_ne!(
            encrypt_at(&cipher, at, b"same value"),
            encrypt_at(&cipher, at, b"same value")
        );
    }

    #[test]
    fn key_check_and_item_values_are_not_interchangeable() {
        let cipher = cipher([1; 32]);
        let key_check = cipher.encrypt(Location::KeyCheck, b"check").unwrap();
        let at = ("", &b""[..], &b""[..]);
        assert!(decrypt_at(&cipher, at, &key_check).is_err());
        let item = encrypt_at(&cipher, at, b"check");
        assert!(cipher.decrypt(Location::KeyCheck, &item).is_err());
    }
}
