//! Identifiers of users and devices.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user's ID: a random UUID the server assigns when the account is created.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
#[serde(transparent)]
pub struct UserId(Uuid);

impl UserId {
    /// A fresh random user ID (the server's job; public for tests and tools).
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The 16 bytes of the UUID, as they appear in signed payloads.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl From<Uuid> for UserId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// A device's ID, unique within its user, assigned by the server.
///
/// A client logging in as a new device sends `0` ([`DeviceId::NEW`]) and gets its ID back.
/// IDs grow monotonically per user and are never reused, even after a device is removed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = u32))]
#[serde(try_from = "u32", into = "u32")]
pub struct DeviceId(u32);

/// A device ID outside the range the server assigns (1 to 2³¹−1, so it fits PostgreSQL's
/// `integer`); `0` is accepted only where it means "assign me one" (login).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("device ID {0} is out of range (1 to {max}; 0 only at login)", max = DeviceId::MAX)]
pub struct InvalidDeviceId(pub u32);

impl DeviceId {
    /// What a client sends to ask the server for a new device ID.
    pub const NEW: DeviceId = DeviceId(0);
    /// The largest device ID (the database stores it as a signed 32-bit integer).
    pub const MAX: u32 = i32::MAX as u32;

    /// A device ID, if `id` is in range. `0` means "assign me one".
    pub fn new(id: u32) -> Result<Self, InvalidDeviceId> {
        if id > Self::MAX {
            Err(InvalidDeviceId(id))
        } else {
            Ok(Self(id))
        }
    }

    /// The numeric ID.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Whether this is the "assign me a new ID" value.
    pub fn is_new(self) -> bool {
        self.0 == 0
    }

    /// The ID as PostgreSQL stores it.
    pub fn as_i32(self) -> i32 {
        // In range by construction: `new` caps at i32::MAX.
        i32::try_from(self.0).unwrap_or(i32::MAX)
    }

    /// A device ID read back from the database, where it is a positive `integer`.
    pub fn from_i32(id: i32) -> Result<Self, InvalidDeviceId> {
        u32::try_from(id)
            .map_err(|_| InvalidDeviceId(0))
            .and_then(Self::new)
    }
}

/// What a device ID read from the wire may be: never `0`, which names no device (a
/// request naming device 0 would otherwise reach the database and come back in answers
/// that the document says cannot hold it). Login reads its `deviceId` with
/// [`login_device_id`] instead, where `0` asks for a new device.
impl TryFrom<u32> for DeviceId {
    type Error = InvalidDeviceId;

    fn try_from(id: u32) -> Result<Self, Self::Error> {
        if id == 0 {
            return Err(InvalidDeviceId(0));
        }
        Self::new(id)
    }
}

/// Serde for login's `deviceId`, the one place `0` ([`DeviceId::NEW`]) is allowed.
pub mod login_device_id {
    use super::DeviceId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the ID as a number (`0` for a new device).
    pub fn serialize<S: Serializer>(id: &DeviceId, serializer: S) -> Result<S::Ok, S::Error> {
        id.0.serialize(serializer)
    }

    /// Reads a number from 0 to [`DeviceId::MAX`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DeviceId, D::Error> {
        let id = u32::deserialize(deserializer)?;
        DeviceId::new(id).map_err(serde::de::Error::custom)
    }
}

impl From<DeviceId> for u32 {
    fn from(id: DeviceId) -> Self {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_rejects_values_past_i32_max() {
        assert!(DeviceId::new(DeviceId::MAX).is_ok());
        assert_eq!(
            DeviceId::new(DeviceId::MAX + 1),
            Err(InvalidDeviceId(DeviceId::MAX + 1))
        );
        let parsed: Result<DeviceId, _> = serde_json::from_str("4294967295");
        assert!(parsed.is_err());
    }

    #[test]
    fn device_id_zero_is_read_only_as_logins_new_device() {
        assert!(serde_json::from_str::<DeviceId>("0").is_err());
        #[derive(serde::Deserialize)]
        struct Login {
            #[serde(with = "login_device_id")]
            id: DeviceId,
        }
        let login: Login = serde_json::from_str(r#"{"id":0}"#).unwrap();
        assert!(login.id.is_new());
        let login: Login = serde_json::from_str(r#"{"id":3}"#).unwrap();
        assert_eq!(login.id.get(), 3);
    }

    #[test]
    fn device_id_round_trips_through_json_as_a_number() {
        let id = DeviceId::new(42).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(serde_json::from_str::<DeviceId>("42").unwrap(), id);
    }

    #[test]
    fn device_id_from_database_rejects_negative_values() {
        assert!(DeviceId::from_i32(-1).is_err());
        assert_eq!(DeviceId::from_i32(7).unwrap().get(), 7);
    }
}
