//! The crypto core, "sans I/O": a state machine over the encrypted store that never
//! touches the network. The client asks it what to publish and send, and hands it what
//! the server returned; so all of it is tested without a server.
//!
//! - [`payload`]: the plaintext inside every envelope, bound to sender and recipient.
//! - [`devices`]: other devices' identity keys and trust (trust on first use, changes
//!   surfaced, re-keyed devices blocked).
//! - [`verification`]: fingerprints and safety numbers.
//! - [`machine`]: [`CryptoMachine`], this device's account and Olm sessions: key uploads,
//!   sessions from claimed keys, encrypting one envelope per device, decrypting and
//!   storing what arrives, the event queue for the app.
//! - [`group`]: Megolm group sessions for channels: this device's outbound session per
//!   channel (rotation, sharing), inbound sessions from sender keys, decrypting with
//!   channel and sender binding and replay detection.

pub mod devices;
// The plaintext codecs and Megolm sessions are internals of the machine; the fuzz
// targets reach their decoders through the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod group;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod group;
pub mod machine;
#[cfg(feature = "fuzzing")]
pub mod payload;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod payload;
mod store;
pub mod verification;

pub use devices::{DeviceChange, DeviceKeys, DeviceRecord, TrustState};
pub use group::{GroupError, ReceivedGroupMessage};
pub use machine::{
    CryptoMachine, Decrypted, Event, FailureReason, ItemOutcome, MachineError, OutgoingMessage,
    OutgoingSend, OutgoingTarget, QueuedEvent, ReceivedMessage, SenderKeyShare,
};
pub use store::RecordError;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
