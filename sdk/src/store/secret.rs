//! The store key and decrypted values: zeroized when dropped, never shown by `Debug`.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroizing;

/// Length of a [`StoreKey`], in bytes.
pub const STORE_KEY_LEN: usize = 32;

/// The key a store is encrypted under, which the app keeps in the platform's key store
/// (the iOS Keychain, the Android Keystore). Zeroized when dropped.
pub struct StoreKey {
    bytes: Zeroizing<[u8; STORE_KEY_LEN]>,
}

impl StoreKey {
    /// Wraps the key bytes. The caller's own copy of `bytes` is theirs to zeroize.
    pub fn from_bytes(bytes: [u8; STORE_KEY_LEN]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; STORE_KEY_LEN] {
        &self.bytes
    }

    /// A second copy (zeroized when dropped too), for work that must own its key, such
    /// as opening the store on the blocking pool. Not `Clone`: copies stay deliberate.
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
        }
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

/// A decrypted value: read it through `Deref<Target = [u8]>`. Zeroized when dropped.
pub struct SecretBytes {
    bytes: Zeroizing<Vec<u8>>,
}

impl SecretBytes {
    /// The value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }
}

impl Deref for SecretBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}
