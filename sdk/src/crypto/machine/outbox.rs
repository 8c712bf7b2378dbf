//! The outbox: a message the app asked to send is kept in the store, under its client
//! message ID, from before it is encrypted until the server stored it (or refused it for
//! good). A send cut off by the network, the server or an app crash is sent again from
//! here under the same client message ID, which the server answers with the original:
//! the recipients get it once, and the app hears `Sent` once (per server message ID).

use super::*;

/// Where a kept message goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutgoingTarget {
    /// Every device of this user (and this user's other devices).
    User(UserId),
    /// Every member device of this channel.
    Channel(Uuid),
}

/// A message on its way out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingSend {
    /// Where it goes.
    pub target: OutgoingTarget,
    /// The client message ID it is sent (and resent) under.
    pub client_message_id: String,
    /// The plaintext (kept in the encrypted store only).
    pub body: Vec<u8>,
    /// When the app asked (ms since the epoch): resends go oldest first.
    pub queued_at_ms: u64,
}

impl std::fmt::Debug for OutgoingSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingSend")
            .field("target", &self.target)
            .field("client_message_id", &self.client_message_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl CryptoMachine {
    /// Keeps a message until it is sent. A kept message with the same client message ID
    /// stays as it is (a repeat of the same send, or a reuse the server will refuse).
    pub fn keep_outgoing(&self, send: &OutgoingSend) -> Result<(), MachineError> {
        let item = send.client_message_id.as_bytes();
        self.store.transaction(|tx| {
            if records::tx_get::<OutgoingSend>(tx, records::OUTBOX, b"", item)?.is_none() {
                records::put(tx, records::OUTBOX, b"", item, send)?;
            }
            Ok::<_, RecordError>(())
        })?;
        Ok(())
    }

    /// Forgets a kept message the server refused for good (it would be refused again).
    pub fn drop_outgoing(
        &self,
        target: &OutgoingTarget,
        client_message_id: &str,
    ) -> Result<(), MachineError> {
        let item = client_message_id.as_bytes();
        self.store.transaction(|tx| {
            let kept = records::tx_get::<OutgoingSend>(tx, records::OUTBOX, b"", item)?;
            if kept.is_some_and(|kept| kept.target == *target) {
                tx.delete(records::OUTBOX, b"", item)?;
            }
            Ok::<_, RecordError>(())
        })?;
        Ok(())
    }

    /// The kept messages, oldest first.
    pub fn outgoing(&self) -> Result<Vec<OutgoingSend>, MachineError> {
        let mut kept: Vec<OutgoingSend> = records::list(&self.store, records::OUTBOX, b"")?;
        kept.sort_by_key(|send| send.queued_at_ms);
        Ok(kept)
    }

    /// The server stored a message: its kept copy leaves the outbox and `event` is
    /// queued, in one transaction. The event is queued once per server message ID: a
    /// repeat of the send (the app retrying what the outbox already sent) queues nothing.
    pub(super) fn record_outgoing_sent(
        &self,
        target: &OutgoingTarget,
        client_message_id: &str,
        message_id: Uuid,
        event: &Event,
    ) -> Result<(), MachineError> {
        let item = client_message_id.as_bytes();
        self.store.transaction(|tx| {
            let kept = records::tx_get::<OutgoingSend>(tx, records::OUTBOX, b"", item)?;
            if kept.is_some_and(|kept| kept.target == *target) {
                tx.delete(records::OUTBOX, b"", item)?;
            }
            let reported = records::tx_get::<bool>(tx, records::SENT, b"", message_id.as_bytes())?;
            if reported.is_none() {
                records::put(tx, records::SENT, b"", message_id.as_bytes(), &true)?;
                queue_event(tx, event)?;
            }
            Ok::<_, RecordError>(())
        })?;
        Ok(())
    }
}
