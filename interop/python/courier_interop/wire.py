"""Courier's byte layouts, written from docs/protocol.md: base64 (section 1), the signed
key bytes (3.1 to 3.3), the payload (5), the sender-key body and the group plaintext
(7.3, 7.4). Nothing here is taken from the SDK's code."""

import base64
import binascii
import re
import struct
import uuid
from dataclasses import dataclass

PAYLOAD_VERSION = 1
KIND_MESSAGE = 1
KIND_SENDER_KEY = 2
MAX_BODY = 61_440
MAX_DEVICE_ID = 2**31 - 1
MEGOLM_SESSION_KEY_BYTES = 229
CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

IDENTITY_LABEL = b"courier:identity-keys:v1\x00"
ONE_TIME_LABEL = b"courier:one-time-key:v1\x00"
FALLBACK_LABEL = b"courier:fallback-key:v1\x00"


class WireError(ValueError):
    """Bytes that do not follow one of the layouts (the decoder refuses them)."""


def b64encode(data: bytes) -> str:
    """Standard alphabet, no padding (section 1)."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    """Standard alphabet, padding optional; the URL-safe alphabet is refused."""
    if not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        raise WireError("not standard base64")
    stripped = text.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except binascii.Error as error:
        raise WireError(f"not base64: {error}") from None


def uuid_bytes(text: str) -> bytes:
    return uuid.UUID(text).bytes


def uuid_text(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


def _device_id(device_id: int) -> bytes:
    if not 1 <= device_id <= MAX_DEVICE_ID:
        raise WireError(f"device ID {device_id} is out of range")
    return struct.pack(">I", device_id)


def identity_signed_bytes(user_id: str, device_id: int, curve25519: bytes, ed25519: bytes) -> bytes:
    """3.1: label ‖ user ID ‖ device ID ‖ Curve25519 key ‖ Ed25519 key (109 bytes)."""
    return IDENTITY_LABEL + uuid_bytes(user_id) + _device_id(device_id) + curve25519 + ed25519


def key_signed_bytes(user_id: str, device_id: int, key_id: str, key: bytes, fallback: bool) -> bytes:
    """3.2 and 3.3: label ‖ user ID ‖ device ID ‖ key ID length (u16) ‖ key ID ‖ key."""
    key_id_bytes = key_id.encode("utf-8")
    label = FALLBACK_LABEL if fallback else ONE_TIME_LABEL
    return (
        label
        + uuid_bytes(user_id)
        + _device_id(device_id)
        + struct.pack(">H", len(key_id_bytes))
        + key_id_bytes
        + key
    )


@dataclass(frozen=True)
class Payload:
    """Section 5: the plaintext inside every Olm message."""

    kind: int
    sender_user_id: str
    sender_device_id: int
    sender_ed25519: bytes
    recipient_user_id: str
    recipient_device_id: int
    recipient_curve25519: bytes
    conversation: str
    client_message_id: str
    timestamp_ms: int
    body: bytes

    def encode(self) -> bytes:
        if not CLIENT_MESSAGE_ID.fullmatch(self.client_message_id):
            raise WireError("invalid client message ID")
        if len(self.body) > MAX_BODY:
            raise WireError("body too large")
        cmid = self.client_message_id.encode("ascii")
        return (
            bytes([PAYLOAD_VERSION, self.kind])
            + uuid_bytes(self.sender_user_id)
            + _device_id(self.sender_device_id)
            + _key32(self.sender_ed25519)
            + uuid_bytes(self.recipient_user_id)
            + _device_id(self.recipient_device_id)
            + _key32(self.recipient_curve25519)
            + uuid_bytes(self.conversation)
            + bytes([len(cmid)])
            + cmid
            + struct.pack(">QI", self.timestamp_ms, len(self.body))
            + self.body
        )

    @classmethod
    def decode(cls, data: bytes) -> "Payload":
        reader = _Reader(data)
        version = reader.u8()
        if version != PAYLOAD_VERSION:
            raise WireError(f"payload version {version} is not supported")
        kind = reader.u8()
        if kind not in (KIND_MESSAGE, KIND_SENDER_KEY):
            raise WireError(f"payload kind {kind} is not known")
        sender_user = uuid_text(reader.take(16))
        sender_device = reader.device_id()
        sender_ed = reader.take(32)
        recipient_user = uuid_text(reader.take(16))
        recipient_device = reader.device_id()
        recipient_curve = reader.take(32)
        conversation = uuid_text(reader.take(16))
        cmid = reader.client_message_id()
        timestamp = reader.u64()
        body = reader.body()
        reader.end()
        return cls(
            kind,
            sender_user,
            sender_device,
            sender_ed,
            recipient_user,
            recipient_device,
            recipient_curve,
            conversation,
            cmid,
            timestamp,
            body,
        )


def sender_key_body(session_id: str, session_key: bytes) -> bytes:
    """7.3: version ‖ session ID length ‖ session ID ‖ 229-byte Megolm session key."""
    sid = session_id.encode("ascii")
    if len(sid) > 64 or len(session_key) != MEGOLM_SESSION_KEY_BYTES:
        raise WireError("invalid sender-key body")
    return bytes([1, len(sid)]) + sid + session_key


def decode_sender_key_body(data: bytes) -> tuple[str, bytes]:
    reader = _Reader(data)
    if reader.u8() != 1:
        raise WireError("sender-key body version is not supported")
    length = reader.u8()
    if length > 64:
        raise WireError("session ID too long")
    session_id = reader.take(length).decode("ascii")
    key = reader.take(MEGOLM_SESSION_KEY_BYTES)
    reader.end()
    if key[0] != 2:
        raise WireError("the session key is invalid")
    if b64encode(key[133:165]) != session_id:
        raise WireError("the body's session ID is not the key's")
    return session_id, key


@dataclass(frozen=True)
class GroupPlaintext:
    """7.4: the plaintext of a Megolm message."""

    channel_id: str
    sender_user_id: str
    sender_device_id: int
    client_message_id: str
    timestamp_ms: int
    body: bytes

    def encode(self) -> bytes:
        if not CLIENT_MESSAGE_ID.fullmatch(self.client_message_id):
            raise WireError("invalid client message ID")
        if len(self.body) > MAX_BODY:
            raise WireError("body too large")
        cmid = self.client_message_id.encode("ascii")
        return (
            bytes([1])
            + uuid_bytes(self.channel_id)
            + uuid_bytes(self.sender_user_id)
            + _device_id(self.sender_device_id)
            + bytes([len(cmid)])
            + cmid
            + struct.pack(">QI", self.timestamp_ms, len(self.body))
            + self.body
        )

    @classmethod
    def decode(cls, data: bytes) -> "GroupPlaintext":
        reader = _Reader(data)
        if reader.u8() != 1:
            raise WireError("group plaintext version is not supported")
        channel = uuid_text(reader.take(16))
        sender_user = uuid_text(reader.take(16))
        sender_device = reader.device_id()
        cmid = reader.client_message_id()
        timestamp = reader.u64()
        body = reader.body()
        reader.end()
        return cls(channel, sender_user, sender_device, cmid, timestamp, body)


def _key32(key: bytes) -> bytes:
    if len(key) != 32:
        raise WireError("a key is not 32 bytes")
    return key


class _Reader:
    def __init__(self, data: bytes):
        self._data = data
        self._at = 0

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._data):
            raise WireError("the payload is truncated")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def device_id(self) -> int:
        value = struct.unpack(">I", self.take(4))[0]
        if not 1 <= value <= MAX_DEVICE_ID:
            raise WireError("the payload names an invalid device ID")
        return value

    def client_message_id(self) -> str:
        length = self.u8()
        if length > 64:
            raise WireError("the payload's client message ID is invalid")
        raw = self.take(length)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise WireError("the payload's client message ID is invalid") from None
        if not CLIENT_MESSAGE_ID.fullmatch(text):
            raise WireError("the payload's client message ID is invalid")
        return text

    def body(self) -> bytes:
        length = struct.unpack(">I", self.take(4))[0]
        if length > MAX_BODY:
            raise WireError("the payload body is too large")
        return self.take(length)

    def end(self) -> None:
        if self._at != len(self._data):
            raise WireError("the payload has trailing bytes")
