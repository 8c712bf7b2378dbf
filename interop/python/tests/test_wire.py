"""The client's byte layouts against protocol.md's own example (5.4) and its canonical
form rules (5.3): no server, no SDK."""

import pytest

from courier_interop import wire
from courier_interop.wire import Payload

# protocol.md 5.4, as printed there.
EXAMPLE_HEX = """
01 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 01 00 00 00 01 a1 a1 a1 a1 a1 a1 a1 a1 a1 a1
a1 a1 a1 a1 a1 a1 a1 a1 a1 a1 a1 a1 a1 a1 a1 a1
a1 a1 a1 a1 a1 a1 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 02 00 00 00 03 b2 b2 b2 b2 b2 b2
b2 b2 b2 b2 b2 b2 b2 b2 b2 b2 b2 b2 b2 b2 b2 b2
b2 b2 b2 b2 b2 b2 b2 b2 b2 b2 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 02 05 6d 73 67 2d 31
00 00 01 8b cf e5 68 00 00 00 00 05 68 65 6c 6c
6f
"""
EXAMPLE = bytes.fromhex(EXAMPLE_HEX)
USER_1 = "00000000-0000-0000-0000-000000000001"
USER_2 = "00000000-0000-0000-0000-000000000002"


def example_payload(**changes):
    fields = dict(
        kind=wire.KIND_MESSAGE,
        sender_user_id=USER_1,
        sender_device_id=1,
        sender_ed25519=b"\xa1" * 32,
        recipient_user_id=USER_2,
        recipient_device_id=3,
        recipient_curve25519=b"\xb2" * 32,
        conversation=USER_2,
        client_message_id="msg-1",
        timestamp_ms=1_700_000_000_000,
        body=b"hello",
    )
    fields.update(changes)
    return Payload(**fields)


def test_the_payload_encodes_to_the_documented_example_and_back():
    assert example_payload().encode() == EXAMPLE
    assert len(EXAMPLE) == 145
    assert Payload.decode(EXAMPLE) == example_payload()


@pytest.mark.parametrize(
    "data, error",
    [
        (EXAMPLE + b"\x00", "trailing bytes"),
        (EXAMPLE[:-1], "truncated"),
        (b"\x02" + EXAMPLE[1:], "version 2"),
        (EXAMPLE[:1] + b"\x03" + EXAMPLE[2:], "kind 3"),
        (EXAMPLE[:18] + b"\x00\x00\x00\x00" + EXAMPLE[22:], "invalid device ID"),
        (EXAMPLE[:18] + b"\x80\x00\x00\x00" + EXAMPLE[22:], "invalid device ID"),
        (EXAMPLE[:122] + b"\x41" + EXAMPLE[123:], "client message ID"),
        (EXAMPLE[:123] + b"msg.1" + EXAMPLE[128:], "client message ID"),
        (EXAMPLE[:136] + b"\x00\xf0\x01" + EXAMPLE[139:], "too large"),
    ],
)
def test_the_decoder_refuses_what_is_not_canonical(data, error):
    with pytest.raises(wire.WireError, match=error):
        Payload.decode(data)


def test_signed_key_bytes_have_the_documented_lengths():
    identity = wire.identity_signed_bytes(USER_1, 1, b"\x01" * 32, b"\x02" * 32)
    assert len(identity) == 109
    assert identity[:25] == b"courier:identity-keys:v1\x00"
    one_time = wire.key_signed_bytes(USER_1, 1, "AAAAAQ", b"\x03" * 32, fallback=False)
    assert len(one_time) == 78 + 6
    assert one_time[:24] == b"courier:one-time-key:v1\x00"
    assert one_time[44:46] == b"\x00\x06"
    fallback = wire.key_signed_bytes(USER_1, 1, "AAAAAQ", b"\x03" * 32, fallback=True)
    assert fallback[:24] == b"courier:fallback-key:v1\x00"
    assert fallback[24:] == one_time[24:]


def test_base64_is_unpadded_out_and_refuses_the_url_safe_alphabet():
    assert wire.b64encode(b"\xfb\xff") == "+/8"
    assert wire.b64decode("+/8=") == wire.b64decode("+/8") == b"\xfb\xff"
    with pytest.raises(wire.WireError):
        wire.b64decode("-_8")
