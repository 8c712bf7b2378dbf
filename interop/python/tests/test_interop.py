"""libolm (courier_interop) against the SDK (its Python binding), through a real
server: one-to-one both ways, pre-key and normal messages, sessions opened from
fallback keys, V1, channels both ways, and wrongly bound payloads the SDK refuses."""

import dataclasses
import secrets

import pytest

from conftest import Kind, only
from courier_interop import wire
from courier_interop.client import now_ms

# Binary on purpose: not UTF-8, with NUL and 0xff bytes, so a client that decodes the
# plaintext as text would corrupt it.
BINARY = bytes(range(256)) + b"\x00\xff\xfe"


def body(label):
    return label.encode() + b"\x00" + BINARY + secrets.token_bytes(8)


def message_items(received):
    return [r for r in received if r.kind == "message"]


def the_message(received, message_id):
    found = [r for r in received if r.item.get("messageId") == message_id]
    assert len(found) == 1, f"expected message {message_id}, got {received}"
    assert found[0].kind == "message", f"not read: {found[0].error}"
    return found[0]


def test_libolm_to_sdk_pre_key_then_normal_and_back(devices):
    alice = devices.olm()
    bob = devices.sdk()

    first_body = body("first")
    first = alice.send(bob.user_id, first_body)
    assert first["envelopeTypes"] == {bob.address: "preKey"}
    message = only(bob.receive(), Kind.MESSAGE, first["messageId"])
    assert message.body == first_body
    assert (message.sender.user_id, message.sender.device_id) == (alice.user_id, alice.device_id)
    assert message.client_message_id == first["clientMessageId"]
    assert message.conversation_user_id == alice.user_id

    # The SDK answers on the session libolm opened: a normal message libolm reads.
    reply_body = body("reply")
    reply = bob.send(alice.user_id, reply_body)
    read = the_message(alice.receive(), reply.message_id)
    assert read.item["envelopeType"] == "normal"
    assert read.body == reply_body
    assert read.payload.client_message_id == reply.client_message_id

    # Now libolm's session has heard back: it sends normal messages.
    second_body = body("second")
    second = alice.send(bob.user_id, second_body)
    assert second["envelopeTypes"] == {bob.address: "normal"}
    assert only(bob.receive(), Kind.MESSAGE, second["messageId"]).body == second_body


def test_sdk_to_libolm_pre_key_then_normal_and_back(devices):
    alice = devices.olm()
    bob = devices.sdk()

    first_body = body("first")
    first = bob.send(alice.user_id, first_body)
    read = the_message(alice.receive(), first.message_id)
    assert read.item["envelopeType"] == "preKey"
    assert read.body == first_body
    payload = read.payload
    assert (payload.sender_user_id, payload.sender_device_id) == bob.address
    assert payload.conversation == alice.user_id
    assert payload.client_message_id == first.client_message_id
    assert alice.key_count()["oneTimeKeyCount"] == 9, "the SDK's pre-key message used one one-time key"

    reply_body = body("reply")
    reply = alice.send(bob.user_id, reply_body)
    assert reply["envelopeTypes"] == {bob.address: "normal"}
    assert only(bob.receive(), Kind.MESSAGE, reply["messageId"]).body == reply_body

    second_body = body("second")
    second = bob.send(alice.user_id, second_body)
    read = the_message(alice.receive(), second.message_id)
    assert read.item["envelopeType"] == "normal"
    assert read.body == second_body


def test_libolm_opens_a_session_from_the_sdk_devices_fallback_key(devices):
    alice = devices.olm()
    bob = devices.sdk()
    alice.fetch_devices(bob.user_id)

    # Claim the SDK device's one-time keys until the server hands out its fallback key.
    one_time = 0
    for _ in range(1000):
        claimed = alice.claim([bob.address])[bob.address]
        if claimed["fallback"]:
            break
        one_time += 1
    assert claimed["fallback"], "the one-time keys never ran out"
    assert one_time > 0

    alice.open_session(bob.address, claimed)
    sent_body = body("via fallback")
    sent = alice.send(bob.user_id, sent_body)
    assert sent["envelopeTypes"] == {bob.address: "preKey"}
    assert only(bob.receive(), Kind.MESSAGE, sent["messageId"]).body == sent_body

    reply = bob.send(alice.user_id, b"reply on the fallback session")
    assert the_message(alice.receive(), reply.message_id).body == b"reply on the fallback session"


def test_the_sdk_opens_a_session_from_a_libolm_devices_fallback_key(devices):
    alice = devices.olm(one_time_keys=1)
    drainer = devices.olm()
    drainer.fetch_devices(alice.user_id)
    taken = drainer.claim([(alice.user_id, alice.device_id)])[(alice.user_id, alice.device_id)]
    assert not taken["fallback"]
    assert alice.key_count()["oneTimeKeyCount"] == 0

    bob = devices.sdk()
    sent_body = body("to the fallback key")
    sent = bob.send(alice.user_id, sent_body)
    read = the_message(alice.receive(), sent.message_id)
    assert read.item["envelopeType"] == "preKey"
    assert read.body == sent_body

    reply = alice.send(bob.user_id, b"answer")
    assert reply["envelopeTypes"] == {bob.address: "normal"}
    assert only(bob.receive(), Kind.MESSAGE, reply["messageId"]).body == b"answer"


def test_a_v1_message_from_libolm_reaches_the_sdk(devices):
    alice = devices.olm()
    bob = devices.sdk()
    (peer,) = alice.fetch_devices(bob.user_id)

    first_body = body("v1 first")
    first = alice.send_v1(peer, first_body)
    assert first["olmType"] == "preKey"
    message = only(bob.receive(), Kind.MESSAGE, first["messageId"])
    assert message.body == first_body
    assert message.client_message_id == first["clientMessageId"]

    reply = bob.send(alice.user_id, b"v2 reply")
    assert the_message(alice.receive(), reply.message_id).body == b"v2 reply"

    second_body = body("v1 second")
    second = alice.send_v1(peer, second_body)
    assert second["olmType"] == "normal"
    assert only(bob.receive(), Kind.MESSAGE, second["messageId"]).body == second_body


def test_an_sdk_group_message_and_sender_key_reach_libolm(devices):
    alice = devices.olm()
    bob = devices.sdk()
    channel = bob.create_channel([alice.user_id])

    sent_body = body("to the channel")
    sent = bob.send_group(channel.channel_id, sent_body)
    received = alice.receive()
    failures = [r.error for r in received if r.kind == "failed"]
    assert failures == []
    (sender_key,) = [r for r in received if r.kind == "senderKey"]
    assert sender_key.payload.kind == wire.KIND_SENDER_KEY
    assert sender_key.payload.conversation == channel.channel_id
    assert (sender_key.payload.sender_user_id, sender_key.payload.sender_device_id) == bob.address
    (group,) = [r for r in received if r.kind == "groupMessage"]
    assert group.item["messageId"] == sent.message_id
    assert group.body == sent_body
    assert group.group.channel_id == channel.channel_id
    assert group.group.client_message_id == sent.client_message_id


def test_a_libolm_megolm_session_and_group_message_reach_the_sdk(devices):
    alice = devices.olm()
    bob = devices.sdk()
    channel = alice.create_channel([bob.user_id])

    shared = alice.share_group_session(channel["channelId"])
    assert shared["stored"] == 1
    sent_body = body("from libolm to the channel")
    sent = alice.send_group(channel["channelId"], sent_body)
    message = only(bob.receive(), Kind.GROUP_MESSAGE, sent["messageId"])
    assert message.body == sent_body
    assert message.channel_id == channel["channelId"]
    assert (message.sender.user_id, message.sender.device_id) == (alice.user_id, alice.device_id)
    assert message.client_message_id == sent["clientMessageId"]

    # A second message on the same session, and the SDK's own answer libolm reads.
    again = alice.send_group(channel["channelId"], b"second")
    assert only(bob.receive(), Kind.GROUP_MESSAGE, again["messageId"]).body == b"second"
    answer = bob.send_group(channel["channelId"], b"answer")
    received = alice.receive()
    assert [r.body for r in received if r.kind == "groupMessage"] == [b"answer"]
    assert answer.message_id in {r.item.get("messageId") for r in received}


HOUR_MS = 3_600_000


def _bound_to_another_device(context):
    other = context["other_bob_device"]

    def alter(peer, payload):
        if peer.address != context["bob"].address:
            return payload
        return dataclasses.replace(
            payload,
            recipient_device_id=other.device_id,
            recipient_curve25519=wire.b64decode(other.curve25519),
        )

    return alter


def _from_another_sender(context):
    carol = context["carol"]
    return lambda peer, payload: dataclasses.replace(
        payload,
        sender_user_id=carol.user_id,
        sender_device_id=carol.device_id,
        sender_ed25519=wire.b64decode(carol.ed25519),
    )


def _in_another_conversation(context):
    carol = context["carol"]
    return lambda peer, payload: dataclasses.replace(payload, conversation=carol.user_id)


def _another_client_message_id(context):
    return lambda peer, payload: dataclasses.replace(payload, client_message_id="not-the-request-s-id")


def _timestamp(offset_ms):
    def make(context):
        return lambda peer, payload: dataclasses.replace(payload, timestamp_ms=now_ms() + offset_ms)

    return make


@pytest.mark.parametrize(
    "alteration, reason",
    [
        (_bound_to_another_device, "wrong_recipient"),
        (_from_another_sender, "wrong_sender"),
        (_in_another_conversation, "wrong_conversation"),
        (_another_client_message_id, "client_message_id_mismatch"),
        (_timestamp(-48 * HOUR_MS), "timestamp_out_of_range"),
        (_timestamp(3 * HOUR_MS), "timestamp_out_of_range"),
    ],
    ids=["another-recipient-device", "another-sender", "another-conversation", "client-message-id", "timestamp-old", "timestamp-future"],
)
def test_the_sdk_refuses_a_wrongly_bound_payload_with_its_reason_then_reads_a_good_one(devices, alteration, reason):
    alice = devices.olm()
    carol = devices.olm()
    bob = devices.sdk()
    second = devices.sdk_login(bob.username, "sdk2")
    context = {"bob": bob, "carol": carol}
    devices_of_bob = {peer.address: peer for peer in alice.fetch_devices(bob.user_id)}
    context["other_bob_device"] = devices_of_bob[second.address]

    bad = alice.send(bob.user_id, b"wrongly bound", alter=alteration(context))
    kinds = bob.receive()
    failure = only(kinds, Kind.DECRYPTION_FAILED, bad["messageId"])
    assert failure.reason == reason
    assert (failure.sender.user_id, failure.sender.device_id) == (alice.user_id, alice.device_id)
    assert not [k for k in kinds if isinstance(k, Kind.MESSAGE)]

    good = alice.send(bob.user_id, b"well bound")
    assert only(bob.receive(), Kind.MESSAGE, good["messageId"]).body == b"well bound"
    assert only(second.receive(), Kind.MESSAGE, good["messageId"]).body == b"well bound"
