//! Group sessions without a network: devices with real vodozemac accounts and real
//! SQLite stores in a temp dir; sender keys pass through a real Olm session, and the
//! "server" is the test handing ciphertexts around under message IDs of its choosing.

use std::path::PathBuf;

use courier_protocol::api::keys::DeviceRef;
use courier_protocol::{DeviceId, UserId};
use proptest::prelude::*;
use tempfile::TempDir;
use uuid::Uuid;
use vodozemac::olm::{Account, OlmMessage, SessionConfig as OlmConfig};

use super::*;
use crate::crypto::devices::DeviceKeys;
use crate::crypto::payload::{BoundDevice, Payload, PayloadError, PayloadKind};
use crate::store::{SqliteStore, StoreKey};

const CHANNEL: Uuid = Uuid::from_u128(0xC0FF_EE00);
const OTHER_CHANNEL: Uuid = Uuid::from_u128(0xBAD0_C0DE);
const T0: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn store_key() -> StoreKey {
    StoreKey::from_bytes([7; 32])
}

/// A device: its Olm account, its store (a file) and its group sessions.
struct Dev {
    own: DeviceRef,
    keys: DeviceKeys,
    account: Account,
    path: PathBuf,
    store: SqliteStore,
    groups: GroupSessions,
}

impl Dev {
    fn new(dir: &TempDir, user: UserId, id: u32) -> Self {
        let account = Account::new();
        let identity = account.identity_keys();
        let keys = DeviceKeys {
            curve25519: identity.curve25519.to_bytes(),
            ed25519: *identity.ed25519.as_bytes(),
        };
        let own = DeviceRef {
            user_id: user,
            device_id: DeviceId::new(id).unwrap(),
        };
        let path = dir.path().join(format!("{user}-{id}.db"));
        let store = SqliteStore::open(&path, &store_key()).unwrap();
        Self {
            own,
            keys,
            account,
            path,
            store,
            groups: GroupSessions::new(own, keys),
        }
    }

    /// As a member list names it: with its Curve25519 identity key.
    fn member(&self) -> BoundDevice {
        BoundDevice {
            user_id: self.own.user_id,
            device_id: self.own.device_id,
            key: self.keys.curve25519,
        }
    }

    /// As the Olm layer verifies it as a sender: with its Ed25519 key.
    fn signer(&self) -> BoundDevice {
        BoundDevice {
            user_id: self.own.user_id,
            device_id: self.own.device_id,
            key: self.keys.ed25519,
        }
    }

    /// Closes the store and opens the file again, with a fresh `GroupSessions`.
    fn reopen(&mut self) {
        // Close the file first (a stand-in takes its place), then open it anew.
        self.store = SqliteStore::open_in_memory(&store_key()).unwrap();
        self.store = SqliteStore::open(&self.path, &store_key()).unwrap();
        self.groups = GroupSessions::new(self.own, self.keys);
    }

    fn create_outbound(&self, channel: Uuid, now_ms: u64) -> OutboundGroupSession {
        self.store
            .transaction(|tx| self.groups.create_outbound(tx, channel, now_ms))
            .unwrap()
    }

    fn receive(&self, message: &IncomingGroupMessage) -> Result<GroupDecrypted, GroupError> {
        self.store
            .transaction(|tx| self.groups.decrypt_group(tx, message))
    }

    fn add_inbound(
        &self,
        channel: Uuid,
        sender: BoundDevice,
        plaintext: &[u8],
    ) -> Result<InboundAdded, GroupError> {
        let payload = Payload::decode(plaintext)?;
        // Delivered under the session ID it carries (when it carries one).
        let session_id = SenderKeyBody::decode(&payload.body)
            .map(|body| body.session_id().to_owned())
            .unwrap_or_default();
        self.store.transaction(|tx| {
            self.groups
                .add_inbound(tx, channel, &session_id, sender, &payload)
        })
    }

    fn has_inbound(&self, channel: Uuid, sender: &Dev, session_id: &str) -> bool {
        self.groups
            .has_inbound(&self.store, channel, sender.own, session_id)
            .unwrap()
    }
}

/// The Olm layer: `from` encrypts `plaintext` for `to` in a fresh Olm session, `to`
/// decrypts it. Returns what `to` decrypted.
fn olm_transfer(from: &Dev, to: &mut Dev, plaintext: &[u8]) -> Vec<u8> {
    to.account.generate_one_time_keys(1);
    let one_time_key = *to.account.one_time_keys().values().next().unwrap();
    to.account.mark_keys_as_published();
    let mut session = from
        .account
        .create_outbound_session(
            OlmConfig::version_1(),
            to.account.identity_keys().curve25519,
            one_time_key,
        )
        .unwrap();
    let OlmMessage::PreKey(message) = session.encrypt(plaintext).unwrap() else {
        panic!("a new session's first message is a pre-key message");
    };
    to.account
        .create_inbound_session(
            OlmConfig::version_1(),
            from.account.identity_keys().curve25519,
            &message,
        )
        .unwrap()
        .plaintext
}

/// `from` gives `session` to `to` through Olm; `to` takes it in; `from` records the share.
fn share(
    from: &Dev,
    to: &mut Dev,
    session: &mut OutboundGroupSession,
) -> Result<InboundAdded, GroupError> {
    let payload = from
        .groups
        .sender_key_payload(session, to.member(), T0)
        .unwrap();
    let plaintext = olm_transfer(from, to, &payload);
    let added = to.add_inbound(session.channel_id(), from.signer(), &plaintext)?;
    session.mark_shared(&[to.member()]);
    from.store
        .transaction(|tx| from.groups.save_outbound(tx, session))
        .unwrap();
    Ok(added)
}

/// `from` encrypts `body` with `session` (stored before it "leaves").
fn send(from: &Dev, session: &mut OutboundGroupSession, body: &[u8]) -> GroupCiphertext {
    let client_id = format!("m{}", session.message_index());
    from.store
        .transaction(|tx| from.groups.encrypt(tx, session, &client_id, T0 + 5, body))
        .unwrap()
}

/// What the server delivers for a ciphertext `from` sent to `channel`.
fn delivered(from: &Dev, channel: Uuid, ciphertext: &GroupCiphertext) -> IncomingGroupMessage {
    IncomingGroupMessage {
        channel_id: channel,
        sender: from.own,
        session_id: ciphertext.session_id.clone(),
        message_id: Uuid::new_v4(),
        // What `send` put inside.
        client_message_id: format!("m{}", ciphertext.message_index),
        server_timestamp_ms: i64::try_from(T0 + 5).unwrap(),
        ciphertext: ciphertext.ciphertext.clone(),
    }
}

fn body_of(result: Result<GroupDecrypted, GroupError>) -> Vec<u8> {
    match result {
        Ok(GroupDecrypted::Message(message)) => message.body,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Alice, Bob, and Carol (Bob's second device), each with a store in `dir`.
fn trio(dir: &TempDir) -> (Dev, Dev, Dev) {
    let (alice, bob) = (UserId::new_random(), UserId::new_random());
    (
        Dev::new(dir, alice, 1),
        Dev::new(dir, bob, 1),
        Dev::new(dir, bob, 2),
    )
}

#[test]
fn a_group_message_reaches_two_receivers_and_the_sender_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, mut carol) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    let members = [alice.member(), bob.member(), carol.member()];
    assert_eq!(
        session.devices_to_share_with(&members),
        vec![bob.member(), carol.member()],
        "every member device but the sender's own"
    );
    for to in [&mut bob, &mut carol] {
        let added = share(&alice, to, &mut session).unwrap();
        assert_eq!(added.outcome, InboundOutcome::New);
        assert_eq!(added.first_known_index, 0);
        assert_eq!(added.session_id, session.session_id());
    }
    assert!(session.devices_to_share_with(&members).is_empty());

    let first = send(&alice, &mut session, b"hello channel");
    assert_eq!(first.message_index, 0);
    assert_eq!(first.session_id, session.session_id());
    let message = delivered(&alice, CHANNEL, &first);
    for receiver in [&bob, &carol, &alice] {
        let Ok(GroupDecrypted::Message(received)) = receiver.receive(&message) else {
            panic!("{:?} could not decrypt", receiver.own);
        };
        assert_eq!(received.body, b"hello channel");
        assert_eq!(received.channel_id, CHANNEL);
        assert_eq!(received.sender, alice.own);
        assert_eq!(received.sender_ed25519, alice.keys.ed25519);
        assert_eq!(received.message_id, message.message_id);
        assert_eq!(received.client_message_id, "m0");
        assert_eq!(received.sent_at_ms, T0 + 5);
        assert_eq!(received.message_index, 0);
    }
    let second = send(&alice, &mut session, b"again");
    assert_eq!(second.message_index, 1);
    assert_eq!(
        body_of(carol.receive(&delivered(&alice, CHANNEL, &second))),
        b"again"
    );
}

#[test]
fn a_device_added_later_reads_later_messages_but_not_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, mut carol) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    let early: Vec<IncomingGroupMessage> = (0..2)
        .map(|i| delivered(&alice, CHANNEL, &send(&alice, &mut session, &[i])))
        .collect();

    // Carol joins: no rotation, she gets the session at its current index.
    let members = [alice.member(), bob.member(), carol.member()];
    assert!(!session.needs_rotation(T0, &members));
    assert_eq!(
        session.devices_to_share_with(&members),
        vec![carol.member()]
    );
    let added = share(&alice, &mut carol, &mut session).unwrap();
    assert_eq!(added.first_known_index, 2);

    let late = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"late"));
    assert_eq!(body_of(carol.receive(&late)), b"late");
    for message in &early {
        assert!(matches!(
            carol.receive(message),
            Err(GroupError::IndexBeforeFirstKnown {
                first_known_index: 2,
                message_index: _,
            })
        ));
    }
    // Bob, who was there from the start, reads all of them.
    for message in early.iter().chain([&late]) {
        bob.receive(message).unwrap();
    }
}

#[test]
fn the_session_rotates_after_100_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, _) = trio(&dir);
    let members = [alice.member(), bob.member()];
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    let mut last = None;
    for i in 0..MAX_MESSAGES_PER_SESSION {
        assert!(!session.needs_rotation(T0, &members), "due after {i}");
        last = Some(send(&alice, &mut session, b"x"));
    }
    assert!(session.needs_rotation(T0, &members));
    let last = last.unwrap();
    assert_eq!(last.message_index, 99);
    assert_eq!(
        body_of(bob.receive(&delivered(&alice, CHANNEL, &last))),
        b"x"
    );
    // The rotation replaces the channel's session; it is shared afresh.
    let next = alice.create_outbound(CHANNEL, T0);
    assert_ne!(next.session_id(), session.session_id());
    assert_eq!(next.message_index(), 0);
    assert_eq!(next.devices_to_share_with(&members), vec![bob.member()]);
    let stored = alice
        .groups
        .outbound(&alice.store, CHANNEL)
        .unwrap()
        .unwrap();
    assert_eq!(stored.session_id(), next.session_id());
}

#[test]
fn the_session_rotates_after_seven_days() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, _) = trio(&dir);
    let members = [alice.member(), bob.member()];
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    send(&alice, &mut session, b"x");
    assert!(!session.needs_rotation(T0 + 7 * DAY_MS - 1, &members));
    assert!(session.needs_rotation(T0 + 7 * DAY_MS, &members));
    // A clock that went back does not make it younger than new, nor due.
    assert!(!session.needs_rotation(T0 - DAY_MS, &members));
    // The creation time is stored with it.
    let stored = alice
        .groups
        .outbound(&alice.store, CHANNEL)
        .unwrap()
        .unwrap();
    assert_eq!(stored.created_ms(), T0);
    assert!(stored.needs_rotation(T0 + 7 * DAY_MS, &members));
}

#[test]
fn a_device_leaving_rotates_the_session_and_cannot_read_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, mut carol) = trio(&dir);
    let mut old = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut old).unwrap();
    share(&alice, &mut carol, &mut old).unwrap();
    let all = [alice.member(), bob.member(), carol.member()];
    assert!(!old.needs_rotation(T0, &all));

    // Carol's device is removed from the channel.
    let remaining = [alice.member(), bob.member()];
    assert!(old.needs_rotation(T0, &remaining));
    // So is a device whose identity key changed: it is not the device it was shared with.
    let mut rekeyed = carol.member();
    rekeyed.key = [0x55; 32];
    assert!(old.needs_rotation(T0, &[alice.member(), bob.member(), rekeyed]));

    let mut new = alice.create_outbound(CHANNEL, T0 + 1);
    assert_eq!(new.devices_to_share_with(&remaining), vec![bob.member()]);
    share(&alice, &mut bob, &mut new).unwrap();
    assert!(!new.needs_rotation(T0 + 1, &remaining));
    let ciphertext = send(&alice, &mut new, b"after carol left");
    let message = delivered(&alice, CHANNEL, &ciphertext);
    assert_eq!(body_of(bob.receive(&message)), b"after carol left");
    assert!(matches!(
        carol.receive(&message),
        Err(GroupError::UnknownSession)
    ));
    // Presented to her under the old session's ID, it does not decrypt either.
    let mut disguised = message.clone();
    disguised.session_id = old.session_id().to_owned();
    assert!(matches!(
        carol.receive(&disguised),
        Err(GroupError::Undecryptable)
    ));
}

#[test]
fn a_replayed_message_index_is_rejected_and_a_redelivery_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, _) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    let message = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"once"));
    assert_eq!(body_of(bob.receive(&message)), b"once");

    // The same message again (a redelivery): recognised, not an error.
    assert_eq!(bob.receive(&message).unwrap(), GroupDecrypted::Duplicate);
    // The same ciphertext under another server message ID: a replay.
    let mut replay = message.clone();
    replay.message_id = Uuid::new_v4();
    assert!(matches!(
        bob.receive(&replay),
        Err(GroupError::Replayed { message_index: 0 })
    ));
    // The replay changed nothing: the original is still a duplicate, the next index new.
    assert_eq!(bob.receive(&message).unwrap(), GroupDecrypted::Duplicate);
    let next = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"twice"));
    assert_eq!(body_of(bob.receive(&next)), b"twice");
}

#[test]
fn a_failed_transaction_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, _) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    let message = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"hi"));
    // The caller's write after the decryption fails: everything rolls back together.
    let failed: Result<(), GroupError> = bob.store.transaction(|tx| {
        bob.groups.decrypt_group(tx, &message)?;
        Err(GroupError::Malformed)
    });
    assert!(failed.is_err());
    assert_eq!(body_of(bob.receive(&message)), b"hi");
}

#[test]
fn a_later_copy_of_a_session_never_replaces_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, mut carol) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    let early_for_carol = alice
        .groups
        .sender_key_payload(&session, carol.member(), T0)
        .unwrap();
    share(&alice, &mut bob, &mut session).unwrap();
    let early = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"0"));
    send(&alice, &mut session, b"1");

    // Bob gets the session again at index 2: he keeps the copy from index 0.
    let again = share(&alice, &mut bob, &mut session).unwrap();
    assert_eq!(again.outcome, InboundOutcome::Kept);
    assert_eq!(again.first_known_index, 0);
    assert_eq!(body_of(bob.receive(&early)), b"0");

    // Carol gets the later copy first, then the earlier one: the earlier one replaces it.
    let later = share(&alice, &mut carol, &mut session).unwrap();
    assert_eq!(
        (later.outcome, later.first_known_index),
        (InboundOutcome::New, 2)
    );
    assert!(matches!(
        carol.receive(&early),
        Err(GroupError::IndexBeforeFirstKnown { .. })
    ));
    let plaintext = olm_transfer(&alice, &mut carol, &early_for_carol);
    let earlier = carol
        .add_inbound(CHANNEL, alice.signer(), &plaintext)
        .unwrap();
    assert_eq!(
        (earlier.outcome, earlier.first_known_index),
        (InboundOutcome::Replaced, 0)
    );
    assert_eq!(body_of(carol.receive(&early)), b"0");
}

#[test]
fn a_sender_key_naming_another_sender_channel_or_recipient_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, carol) = trio(&dir);
    let mallory = Dev::new(&dir, UserId::new_random(), 1);
    let session = alice.create_outbound(CHANNEL, T0);
    let for_bob = alice
        .groups
        .sender_key_payload(&session, bob.member(), T0)
        .unwrap();

    let decoded = Payload::decode(&for_bob).unwrap();
    assert_eq!(decoded.kind, PayloadKind::SenderKey);
    assert_eq!(decoded.conversation, CHANNEL);
    assert_eq!(decoded.sender, alice.signer());
    assert_eq!(decoded.recipient, bob.member());
    assert_eq!(
        decoded.client_message_id,
        session.session_id().replace('+', "-").replace('/', "_")
    );

    // Delivered for another channel than the one it names.
    let plaintext = olm_transfer(&alice, &mut bob, &for_bob);
    assert!(matches!(
        bob.add_inbound(OTHER_CHANNEL, alice.signer(), &plaintext),
        Err(GroupError::ChannelMismatch)
    ));
    // Relayed by Mallory: the Olm layer verified Mallory, the payload names Alice.
    let relayed = olm_transfer(&mallory, &mut bob, &for_bob);
    assert!(matches!(
        bob.add_inbound(CHANNEL, mallory.signer(), &relayed),
        Err(GroupError::SenderMismatch)
    ));
    // Alice's device with another signing key than the one on record.
    let mut wrong_key = alice.signer();
    wrong_key.key = [1; 32];
    assert!(matches!(
        bob.add_inbound(CHANNEL, wrong_key, &plaintext),
        Err(GroupError::Plaintext(PayloadError::SenderKeyMismatch))
    ));
    // Carol's copy, handed to Bob.
    let for_carol = alice
        .groups
        .sender_key_payload(&session, carol.member(), T0)
        .unwrap();
    assert!(matches!(
        bob.add_inbound(CHANNEL, alice.signer(), &for_carol),
        Err(GroupError::Plaintext(PayloadError::RecipientMismatch))
    ));
    // A message payload is not a sender key.
    let mut message = Payload::decode(&for_bob).unwrap();
    message.kind = PayloadKind::Message;
    assert!(matches!(
        bob.add_inbound(CHANNEL, alice.signer(), &message.encode().unwrap()),
        Err(GroupError::NotASenderKey)
    ));
    // A body whose session ID is not its key's.
    let mut forged = Payload::decode(&for_bob).unwrap();
    let id_at = 2;
    forged.body[id_at] ^= 1;
    assert!(matches!(
        bob.add_inbound(CHANNEL, alice.signer(), &forged.encode().unwrap()),
        Err(GroupError::InvalidSessionKey)
    ));
    assert!(!bob.has_inbound(CHANNEL, &alice, session.session_id()));
    assert!(!bob.has_inbound(OTHER_CHANNEL, &alice, session.session_id()));
    assert!(!bob.has_inbound(CHANNEL, &mallory, session.session_id()));
    // The genuine one is taken.
    bob.add_inbound(CHANNEL, alice.signer(), &plaintext)
        .unwrap();
    assert!(bob.has_inbound(CHANNEL, &alice, session.session_id()));
}

#[test]
fn a_sender_key_delivered_under_another_session_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, _) = trio(&dir);
    let session = alice.create_outbound(CHANNEL, T0);
    let other = alice.create_outbound(OTHER_CHANNEL, T0);
    let payload = alice
        .groups
        .sender_key_payload(&session, bob.member(), T0)
        .unwrap();
    let plaintext = olm_transfer(&alice, &mut bob, &payload);
    let payload = Payload::decode(&plaintext).unwrap();
    let added = bob.store.transaction(|tx| {
        bob.groups
            .add_inbound(tx, CHANNEL, other.session_id(), alice.signer(), &payload)
    });
    assert!(matches!(added, Err(GroupError::SessionIdMismatch)));
    assert!(!bob.has_inbound(CHANNEL, &alice, session.session_id()));
    assert!(!bob.has_inbound(CHANNEL, &alice, other.session_id()));
}

#[test]
fn a_message_under_another_client_message_id_or_far_from_the_server_time_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, _) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    let message = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"hi"));

    let mut relabelled = message.clone();
    relabelled.client_message_id = "another-send".into();
    assert!(matches!(
        bob.receive(&relabelled),
        Err(GroupError::Plaintext(PayloadError::ClientMessageIdMismatch))
    ));
    for server_ms in [T0 + 5 + 2 * DAY_MS, T0 - DAY_MS] {
        let mut shifted = message.clone();
        shifted.message_id = Uuid::new_v4();
        shifted.server_timestamp_ms = i64::try_from(server_ms).unwrap();
        assert!(matches!(
            bob.receive(&shifted),
            Err(GroupError::Plaintext(PayloadError::TimestampOutOfRange))
        ));
    }
    // None of them used up the message's index.
    assert_eq!(body_of(bob.receive(&message)), b"hi");
}

#[test]
fn a_message_attributed_to_another_sender_or_channel_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, carol) = trio(&dir);
    let mut mallory = Dev::new(&dir, UserId::new_random(), 1);
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    share(&alice, &mut mallory, &mut session).unwrap();
    // What Mallory received from Alice (index 0).
    let alice_key = {
        let for_mallory = alice
            .groups
            .sender_key_payload(&session, mallory.member(), T0)
            .unwrap();
        Payload::decode(&for_mallory).unwrap().body
    };
    let message = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"from alice"));

    // The server claims another channel, or another sender.
    let mut other_channel = message.clone();
    other_channel.channel_id = OTHER_CHANNEL;
    assert!(matches!(
        bob.receive(&other_channel),
        Err(GroupError::UnknownSession)
    ));
    let mut other_sender = message.clone();
    other_sender.sender = carol.own;
    assert!(matches!(
        bob.receive(&other_sender),
        Err(GroupError::UnknownSession)
    ));

    // Mallory, a member, passes Alice's session key off as her own sender key, and the
    // server attributes Alice's message to Mallory: the plaintext inside names Alice.
    let passed_off = Payload {
        kind: PayloadKind::SenderKey,
        sender: mallory.signer(),
        recipient: bob.member(),
        conversation: CHANNEL,
        client_message_id: "k".into(),
        timestamp_ms: T0,
        body: alice_key,
    };
    let plaintext = olm_transfer(&mallory, &mut bob, &passed_off.encode().unwrap());
    bob.add_inbound(CHANNEL, mallory.signer(), &plaintext)
        .unwrap();
    let mut attributed = message.clone();
    attributed.sender = mallory.own;
    assert!(matches!(
        bob.receive(&attributed),
        Err(GroupError::SenderMismatch)
    ));

    // A sender whose plaintext names another channel than the one it was sent in.
    let mut wrong_channel = GroupPlaintext {
        channel_id: OTHER_CHANNEL,
        sender: alice.own,
        client_message_id: "x".into(),
        timestamp_ms: T0,
        body: b"elsewhere".to_vec(),
    }
    .encode()
    .unwrap();
    let ciphertext = session.encrypt_bytes(&wrong_channel);
    wrong_channel.clear();
    assert!(matches!(
        bob.receive(&delivered(&alice, CHANNEL, &ciphertext)),
        Err(GroupError::ChannelMismatch)
    ));

    // Garbage is malformed, and none of it touched the genuine message.
    let mut garbage = message.clone();
    garbage.ciphertext = vec![1, 2, 3];
    assert!(matches!(bob.receive(&garbage), Err(GroupError::Malformed)));
    assert_eq!(body_of(bob.receive(&message)), b"from alice");
}

#[test]
fn group_state_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob, _) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    let first = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"one"));
    let second = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"two"));
    assert_eq!(body_of(bob.receive(&first)), b"one");
    let session_id = session.session_id().to_owned();
    drop(session);

    alice.reopen();
    bob.reopen();

    let mut session = alice
        .groups
        .outbound(&alice.store, CHANNEL)
        .unwrap()
        .unwrap();
    assert_eq!(session.session_id(), session_id);
    assert_eq!(session.message_index(), 2);
    assert_eq!(session.created_ms(), T0);
    assert_eq!(session.shared_with(), &[bob.member()]);
    let members = [alice.member(), bob.member()];
    assert!(session.devices_to_share_with(&members).is_empty());
    assert!(!session.needs_rotation(T0, &members));

    let third = delivered(&alice, CHANNEL, &send(&alice, &mut session, b"three"));
    assert_eq!(body_of(bob.receive(&second)), b"two");
    assert_eq!(body_of(bob.receive(&third)), b"three");
    // What was seen before the restart is still known.
    assert_eq!(bob.receive(&first).unwrap(), GroupDecrypted::Duplicate);
    let mut replay = first.clone();
    replay.message_id = Uuid::new_v4();
    assert!(matches!(
        bob.receive(&replay),
        Err(GroupError::Replayed { message_index: 0 })
    ));
    // And the sender reads its own messages from its stored copy.
    assert_eq!(body_of(alice.receive(&third)), b"three");
    // The in-transaction read sees the same session.
    let loaded = alice
        .store
        .transaction(|tx| alice.groups.load_outbound(tx, CHANNEL))
        .unwrap()
        .unwrap();
    assert_eq!(loaded.message_index(), 3);
}

#[test]
fn a_discarded_outbound_session_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, _, _) = trio(&dir);
    alice.create_outbound(CHANNEL, T0);
    let discarded = alice
        .store
        .transaction(|tx| alice.groups.discard_outbound(tx, CHANNEL))
        .unwrap();
    assert!(discarded);
    assert!(
        alice
            .groups
            .outbound(&alice.store, CHANNEL)
            .unwrap()
            .is_none()
    );
}

#[test]
fn mark_shared_ignores_repeats_and_the_own_device() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    session.mark_shared(&[bob.member(), bob.member(), alice.member()]);
    assert_eq!(session.shared_with(), &[bob.member()]);
    let members = [carol.member(), carol.member(), bob.member(), alice.member()];
    assert_eq!(
        session.devices_to_share_with(&members),
        vec![carol.member()]
    );
}

#[test]
fn debug_output_hides_keys_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob, _) = trio(&dir);
    let mut session = alice.create_outbound(CHANNEL, T0);
    share(&alice, &mut bob, &mut session).unwrap();
    let key = session.export_session_key();
    let secret = key.encode();
    let hex: String = secret[50..60].iter().map(|b| format!("{b:02x}")).collect();
    let message = delivered(
        &alice,
        CHANNEL,
        &send(&alice, &mut session, b"secret words"),
    );
    let Ok(GroupDecrypted::Message(received)) = bob.receive(&message) else {
        panic!("not decrypted");
    };
    let plaintext = GroupPlaintext {
        channel_id: CHANNEL,
        sender: alice.own,
        client_message_id: "m".into(),
        timestamp_ms: 0,
        body: b"secret words".to_vec(),
    };
    for debug in [
        format!("{key:?}"),
        format!("{session:?}"),
        format!("{received:?}"),
        format!("{plaintext:?}"),
        format!("{:?}", alice.groups),
    ] {
        assert!(!debug.contains("secret"), "{debug}");
        assert!(!debug.contains("ratchet"), "{debug}");
        assert!(!debug.contains(&hex), "{debug}");
        assert!(!debug.contains(&format!("{:?}", &secret[5..15])), "{debug}");
    }
}

// The plaintext encodings.

fn sample_plaintext() -> GroupPlaintext {
    GroupPlaintext {
        channel_id: CHANNEL,
        sender: DeviceRef {
            user_id: UserId::from(Uuid::from_u128(1)),
            device_id: DeviceId::new(3).unwrap(),
        },
        client_message_id: "msg-1".into(),
        timestamp_ms: T0,
        body: b"hello".to_vec(),
    }
}

#[test]
fn the_group_plaintext_layout_is_fixed() {
    let bytes = sample_plaintext().encode().unwrap();
    let mut expected = vec![1u8];
    expected.extend_from_slice(CHANNEL.as_bytes());
    expected.extend_from_slice(Uuid::from_u128(1).as_bytes());
    expected.extend_from_slice(&3u32.to_be_bytes());
    expected.push(5);
    expected.extend_from_slice(b"msg-1");
    expected.extend_from_slice(&T0.to_be_bytes());
    expected.extend_from_slice(&5u32.to_be_bytes());
    expected.extend_from_slice(b"hello");
    assert_eq!(bytes, expected);
}

#[test]
fn group_plaintext_decoding_refuses_what_is_not_canonical() {
    let good = sample_plaintext().encode().unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        GroupPlaintext::decode(&trailing),
        Err(PayloadError::TrailingBytes)
    );
    let mut version = good.clone();
    version[0] = 2;
    assert_eq!(
        GroupPlaintext::decode(&version),
        Err(PayloadError::UnsupportedVersion(2))
    );
    // The device ID sits after version, channel and user.
    let mut device = good.clone();
    device[33..37].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(
        GroupPlaintext::decode(&device),
        Err(PayloadError::InvalidDeviceId)
    );
    device[33..37].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        GroupPlaintext::decode(&device),
        Err(PayloadError::InvalidDeviceId)
    );
    let mut id = good.clone();
    id[38] = b' ';
    assert_eq!(
        GroupPlaintext::decode(&id),
        Err(PayloadError::InvalidClientMessageId)
    );
    for cut in 0..good.len() {
        assert!(
            GroupPlaintext::decode(&good[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut new_device = sample_plaintext();
    new_device.sender.device_id = DeviceId::NEW;
    assert_eq!(new_device.encode(), Err(PayloadError::InvalidDeviceId));
    let mut too_large = sample_plaintext();
    too_large.body = vec![0; crate::crypto::payload::MAX_BODY_BYTES + 1];
    assert_eq!(too_large.encode(), Err(PayloadError::BodyTooLarge));
}

#[test]
fn sender_key_bodies_round_trip_and_refuse_trailing_bytes() {
    let session = GroupSession::new(SessionConfig::version_1());
    let body = SenderKeyBody::new(session.session_key());
    assert_eq!(body.session_id(), session.session_id());
    assert_eq!(body.first_known_index(), 0);
    let bytes = body.encode();
    let decoded = SenderKeyBody::decode(&bytes).unwrap();
    assert_eq!(decoded.session_id(), body.session_id());
    assert_eq!(*decoded.encode(), *bytes);
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    assert!(matches!(
        SenderKeyBody::decode(&trailing),
        Err(GroupError::Plaintext(PayloadError::TrailingBytes))
    ));
    // A flipped bit in the ratchet breaks the key's signature.
    let mut flipped = bytes.to_vec();
    flipped[60] ^= 1;
    assert!(matches!(
        SenderKeyBody::decode(&flipped),
        Err(GroupError::InvalidSessionKey)
    ));
}

fn arb_plaintext() -> impl Strategy<Value = GroupPlaintext> {
    (
        any::<u128>(),
        any::<u128>(),
        1..=DeviceId::MAX,
        "[A-Za-z0-9_-]{1,64}",
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(
            |(channel, user, device, client_message_id, timestamp_ms, body)| GroupPlaintext {
                channel_id: Uuid::from_u128(channel),
                sender: DeviceRef {
                    user_id: UserId::from(Uuid::from_u128(user)),
                    device_id: DeviceId::new(device).unwrap(),
                },
                client_message_id,
                timestamp_ms,
                body,
            },
        )
}

proptest! {
    #[test]
    fn group_plaintexts_round_trip(plaintext in arb_plaintext()) {
        let bytes = plaintext.encode().unwrap();
        prop_assert_eq!(GroupPlaintext::decode(&bytes).unwrap(), plaintext);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_accepts_only_canonical_encodings(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Ok(plaintext) = GroupPlaintext::decode(&bytes) {
            prop_assert_eq!(plaintext.encode().unwrap(), bytes.clone());
        }
        if let Ok(body) = SenderKeyBody::decode(&bytes) {
            prop_assert_eq!(body.encode().to_vec(), bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic_and_stay_canonical(
        plaintext in arb_plaintext(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = plaintext.encode().unwrap();
        let i = at.index(bytes.len());
        bytes[i] = value;
        if let Ok(decoded) = GroupPlaintext::decode(&bytes) {
            prop_assert_eq!(decoded.encode().unwrap(), bytes.clone());
        }
        let cut = cut.index(bytes.len());
        let _ = GroupPlaintext::decode(&bytes[..cut]);
    }
}
