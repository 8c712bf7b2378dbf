//! Test support, hidden from the docs and not part of the SDK's API: builds and encrypts
//! payloads the SDK itself would never send (wrongly bound ones), so tests can check
//! that a receiver refuses each, and hand-built senders can produce what other clients
//! send.

use courier_protocol::UserId;
use courier_protocol::api::keys::DeviceRef;
use courier_protocol::api::messages::DeviceEnvelope;
use uuid::Uuid;

use crate::crypto::payload::{BoundDevice, Payload, PayloadKind};
use crate::crypto::{CryptoMachine, MachineError};

/// The fields of a message payload (see `crypto::payload` for what each binds and how
/// it is encoded).
#[derive(Clone)]
pub struct MessagePayload {
    /// The sending device.
    pub sender: DeviceRef,
    /// The sending device's Ed25519 signing key.
    pub sender_ed25519: [u8; 32],
    /// The device it is for.
    pub recipient: DeviceRef,
    /// That device's Curve25519 identity key.
    pub recipient_curve25519: [u8; 32],
    /// The conversation (the user the message is sent to).
    pub conversation: Uuid,
    /// The client message ID.
    pub client_message_id: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The message.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for MessagePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePayload")
            .field("sender", &self.sender)
            .field("recipient", &self.recipient)
            .field("client_message_id", &self.client_message_id)
            .finish_non_exhaustive()
    }
}

impl MessagePayload {
    /// The payload `machine` would put in a message to `conversation` for `recipient`,
    /// a device in its records ([`MachineError::NoSuchDevice`] otherwise).
    pub fn genuine(
        machine: &CryptoMachine,
        conversation: UserId,
        recipient: DeviceRef,
        client_message_id: &str,
        body: &[u8],
        timestamp_ms: u64,
    ) -> Result<Self, MachineError> {
        let record = machine
            .devices(recipient.user_id)?
            .into_iter()
            .find(|d| d.device_id == recipient.device_id)
            .ok_or(MachineError::NoSuchDevice(recipient))?;
        Ok(Self {
            sender: machine.own_device(),
            sender_ed25519: machine.identity_keys().ed25519,
            recipient,
            recipient_curve25519: record.keys.curve25519,
            conversation: conversation.as_uuid(),
            client_message_id: client_message_id.to_owned(),
            timestamp_ms,
            body: body.to_vec(),
        })
    }

    /// The encoded payload, the plaintext Olm encrypts. Any device ID other than 0 (a
    /// new device) encodes.
    pub fn encode(&self) -> Result<Vec<u8>, MachineError> {
        let device = |device: DeviceRef, key: [u8; 32]| BoundDevice {
            user_id: device.user_id,
            device_id: device.device_id,
            key,
        };
        Ok(Payload {
            kind: PayloadKind::Message,
            sender: device(self.sender, self.sender_ed25519),
            recipient: device(self.recipient, self.recipient_curve25519),
            conversation: self.conversation,
            client_message_id: self.client_message_id.clone(),
            timestamp_ms: self.timestamp_ms,
            body: self.body.clone(),
        }
        .encode()?)
    }
}

/// Olm-encrypts `plaintext` for `device` with `machine`'s current session with it, and
/// stores the advanced session: the envelope to send for that device.
/// [`MachineError::MissingSessions`] when there is no session yet (send it a genuine
/// message first).
pub fn encrypt_for(
    machine: &mut CryptoMachine,
    device: DeviceRef,
    plaintext: &[u8],
) -> Result<DeviceEnvelope, MachineError> {
    let (envelope_type, ciphertext) = machine.olm_encrypt(device, plaintext)?;
    machine.store_sessions(&[device])?;
    Ok(DeviceEnvelope {
        user_id: device.user_id,
        device_id: device.device_id,
        envelope_type,
        ciphertext,
    })
}
