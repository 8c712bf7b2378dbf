"""A Courier device on libolm (python-olm), written from docs/api.md and
docs/protocol.md: accounts and login, signed key publication, claims, Olm sessions,
V2 and V1 sends, the REST inbox and its acknowledgement, channels with Megolm.

It keeps everything in memory (a test client): no persistence, no retries."""

import datetime
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import olm

from . import wire
from .wire import GroupPlaintext, Payload, b64decode, b64encode


class ApiError(Exception):
    """The server answered an error (api.md "Errors")."""

    def __init__(self, status: int, code: str, message: str, details):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.details = details


class ProtocolError(Exception):
    """Something the server or a peer sent breaks docs/protocol.md."""


class Api:
    """JSON over HTTP with an optional bearer token."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.token: Optional[str] = None

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                detail = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(error.code, "unparsable", raw[:200].decode("utf-8", "replace"), None) from None
            raise ApiError(error.code, detail["code"], detail.get("message", ""), detail.get("details")) from None
        return json.loads(raw) if raw else None


@dataclass
class PeerDevice:
    """A device from the directory whose self-signature verified (3.1)."""

    user_id: str
    device_id: int
    curve25519: str  # base64, as libolm takes it
    ed25519: str

    @property
    def address(self):
        return (self.user_id, self.device_id)


@dataclass
class Received:
    """What one stream item gave this device."""

    kind: str  # "message", "groupMessage", "senderKey", "failed", "other"
    item: dict
    payload: Optional[Payload] = None
    group: Optional[GroupPlaintext] = None
    error: Optional[str] = None

    @property
    def body(self) -> Optional[bytes]:
        if self.payload is not None:
            return self.payload.body
        if self.group is not None:
            return self.group.body
        return None


def now_ms() -> int:
    return int(time.time() * 1000)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def timestamp_ms_of(text: str) -> int:
    """A JSON timestamp (RFC 3339, openapi.json's `date-time`) in milliseconds since the
    epoch, truncated: the unit the payload's timestamp is compared in."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ProtocolError(f"a timestamp without a time zone: {text}")
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


def new_client_message_id() -> str:
    return secrets.token_hex(16)


def _decrypt_bytes(session, message) -> bytes:
    """python-olm decodes plaintext as UTF-8; payloads are binary. surrogateescape keeps
    every byte that is not UTF-8 as a lone surrogate, and encoding back restores them."""
    return session.decrypt(message, unicode_errors="surrogateescape").encode("utf-8", "surrogateescape")


def _group_decrypt_bytes(session, ciphertext: str) -> tuple[bytes, int]:
    text, index = session.decrypt(ciphertext, unicode_errors="surrogateescape")
    return text.encode("utf-8", "surrogateescape"), index


TIMESTAMP_BEFORE_MS = 24 * 3_600_000
TIMESTAMP_AFTER_MS = 3_600_000


def _check_bound_to_item(item, client_message_id: str, timestamp_ms: int):
    """6.2 steps 15 and 16, 7.7 steps 12 and 13: the plaintext's client message ID is the
    item's, and its timestamp within -24 h / +1 h of the item's serverTimestamp."""
    if client_message_id != item["clientMessageId"]:
        raise ProtocolError("client_message_id_mismatch")
    server = timestamp_ms_of(item["serverTimestamp"])
    if not server - TIMESTAMP_BEFORE_MS <= timestamp_ms <= server + TIMESTAMP_AFTER_MS:
        raise ProtocolError("timestamp_out_of_range")


class OlmDevice:
    """One logged-in device of a user, its keys in a libolm account."""

    def __init__(self, server_url: str, username: str, password: str):
        self.api = Api(server_url)
        self.username = username
        self.password = password
        self.account = olm.Account()
        self.user_id: Optional[str] = None
        self.device_id: Optional[int] = None
        self.devices: dict[tuple[str, int], PeerDevice] = {}
        # Olm sessions per peer device, the most recently used first (4.2).
        self.sessions: dict[tuple[str, int], list] = {}
        self.cursor = 0
        self.seen_message_ids: set[str] = set()
        # Megolm: own outbound session per channel, inbound per (channel, user, device, session).
        self.outbound_groups: dict[str, olm.OutboundGroupSession] = {}
        self.shared_with: dict[str, set] = {}
        self.inbound_groups: dict[tuple[str, str, int, str], olm.InboundGroupSession] = {}

    # --- accounts and keys -----------------------------------------------------------

    @classmethod
    def register(cls, server_url, username, password, device_name="libolm", one_time_keys=10, fallback=True):
        device = cls(server_url, username, password)
        device.api.call("POST", "/v1/accounts", {"username": username, "password": password})
        device.login(device_name)
        device.publish_identity()
        if one_time_keys:
            device.publish_one_time_keys(one_time_keys)
        if fallback:
            device.publish_fallback_key()
        return device

    def login(self, device_name="libolm"):
        answer = self.api.call(
            "POST",
            "/v1/login",
            {"username": self.username, "password": self.password, "deviceId": 0, "deviceName": device_name},
        )
        self.user_id = answer["userId"]
        self.device_id = answer["deviceId"]
        self.api.token = answer["accessToken"]

    @property
    def curve25519(self) -> str:
        return self.account.identity_keys["curve25519"]

    @property
    def ed25519(self) -> str:
        return self.account.identity_keys["ed25519"]

    def _sign(self, data: bytes) -> str:
        # libolm signs raw bytes and answers base64 (3.6).
        return self.account.sign(data)

    def publish_identity(self):
        signed = wire.identity_signed_bytes(
            self.user_id, self.device_id, b64decode(self.curve25519), b64decode(self.ed25519)
        )
        self.api.call(
            "PUT",
            "/v1/keys/identity",
            {"curve25519": self.curve25519, "ed25519": self.ed25519, "signature": self._sign(signed)},
        )

    def _signed_key(self, key_id: str, key: str, fallback: bool) -> dict:
        signed = wire.key_signed_bytes(self.user_id, self.device_id, key_id, b64decode(key), fallback)
        return {"keyId": key_id, "key": key, "signature": self._sign(signed)}

    def publish_one_time_keys(self, count: int) -> dict:
        self.account.generate_one_time_keys(count)
        keys = self.account.one_time_keys["curve25519"]
        answer = self.api.call(
            "POST",
            "/v1/keys/one-time",
            {"oneTimeKeys": [self._signed_key(key_id, key, False) for key_id, key in keys.items()]},
        )
        self.account.mark_keys_as_published()
        return answer

    def publish_fallback_key(self):
        self.account.generate_fallback_key()
        ((key_id, key),) = self.account.fallback_key["curve25519"].items()
        self.api.call("PUT", "/v1/keys/fallback", self._signed_key(key_id, key, True))
        self.account.mark_keys_as_published()

    def key_count(self) -> dict:
        return self.api.call("GET", "/v1/keys/count")

    # --- directory, claims, sessions ------------------------------------------------

    def fetch_devices(self, user_id: str) -> list[PeerDevice]:
        """The directory's devices of a user whose self-signatures verify (3.1, 3.7);
        the own device is never recorded."""
        answer = self.api.call("GET", f"/v1/keys/devices/{user_id}")
        if answer["userId"] != user_id:
            raise ProtocolError("the directory answered for another user")
        found = []
        for entry in answer["devices"]:
            keys = entry["identityKeys"]
            device_id = entry["deviceId"]
            signed = wire.identity_signed_bytes(
                user_id, device_id, b64decode(keys["curve25519"]), b64decode(keys["ed25519"])
            )
            try:
                olm.ed25519_verify(keys["ed25519"], signed, keys["signature"])
            except olm.OlmVerifyError:
                continue
            if (user_id, device_id) == (self.user_id, self.device_id):
                continue
            peer = PeerDevice(user_id, device_id, keys["curve25519"], keys["ed25519"])
            known = self.devices.get(peer.address)
            if known is not None and (known.curve25519, known.ed25519) != (peer.curve25519, peer.ed25519):
                raise ProtocolError(f"device {peer.address} changed identity keys")
            self.devices[peer.address] = peer
            found.append(peer)
        return found

    def claim(self, addresses) -> dict[tuple[str, int], dict]:
        """Claims a key for each device and checks its signature (3.5); answers the
        verified claims by device."""
        answer = self.api.call(
            "POST", "/v1/keys/claim", {"devices": [{"userId": u, "deviceId": d} for u, d in addresses]}
        )
        verified = {}
        for key in answer["keys"]:
            address = (key["userId"], key["deviceId"])
            peer = self.devices.get(address)
            if peer is None:
                raise ProtocolError(f"claimed a key of unknown device {address}")
            signed = wire.key_signed_bytes(
                key["userId"], key["deviceId"], key["keyId"], b64decode(key["key"]), key["fallback"]
            )
            olm.ed25519_verify(peer.ed25519, signed, key["signature"])
            verified[address] = key
        return verified

    def open_session(self, address, claimed: Optional[dict] = None):
        """A new outbound Olm session with a device (4.2), from a claimed key (claims one
        when none is given). Answers the claimed key."""
        if claimed is None:
            claimed = self.claim([address]).get(address)
            if claimed is None:
                raise ProtocolError(f"no key available for {address}")
        peer = self.devices[address]
        session = olm.OutboundSession(self.account, peer.curve25519, claimed["key"])
        self.sessions.setdefault(address, []).insert(0, session)
        return claimed

    def _session_for(self, address):
        if not self.sessions.get(address):
            self.open_session(address)
        return self.sessions[address][0]

    def encrypt_for(self, address, plaintext: bytes) -> tuple[str, str]:
        """Olm-encrypts for a device: (envelopeType, ciphertext) as 4.5 puts them on the wire."""
        message = self._session_for(address).encrypt(plaintext)
        envelope_type = "preKey" if isinstance(message, olm.OlmPreKeyMessage) else "normal"
        return envelope_type, message.ciphertext

    def _touch(self, address, session):
        sessions = self.sessions.setdefault(address, [])
        if session in sessions:
            sessions.remove(session)
        sessions.insert(0, session)

    # --- payloads -------------------------------------------------------------------

    def payload_for(self, peer: PeerDevice, kind, conversation, client_message_id, body, timestamp_ms=None) -> Payload:
        return Payload(
            kind=kind,
            sender_user_id=self.user_id,
            sender_device_id=self.device_id,
            sender_ed25519=b64decode(self.ed25519),
            recipient_user_id=peer.user_id,
            recipient_device_id=peer.device_id,
            recipient_curve25519=b64decode(peer.curve25519),
            conversation=conversation,
            client_message_id=client_message_id,
            timestamp_ms=now_ms() if timestamp_ms is None else timestamp_ms,
            body=body,
        )

    def targets_for(self, recipient_user_id: str) -> list[PeerDevice]:
        """6.1 steps 1 and 2: the recipient's devices and the own user's other devices."""
        users = [recipient_user_id] if recipient_user_id == self.user_id else [recipient_user_id, self.user_id]
        targets = []
        for user in users:
            targets.extend(self.fetch_devices(user))
        return targets

    # --- one-to-one sends -----------------------------------------------------------

    def send(
        self,
        recipient_user_id: str,
        body: bytes,
        client_message_id: Optional[str] = None,
        alter: Optional[Callable[[PeerDevice, Payload], Payload]] = None,
    ) -> dict:
        """A V2 send (6.1). `alter` rewrites a target's payload before encryption: the
        tests' way of sending a wrongly bound payload."""
        client_message_id = client_message_id or new_client_message_id()
        envelopes = []
        for peer in self.targets_for(recipient_user_id):
            payload = self.payload_for(peer, wire.KIND_MESSAGE, recipient_user_id, client_message_id, body)
            if alter is not None:
                payload = alter(peer, payload)
            envelope_type, ciphertext = self.encrypt_for(peer.address, payload.encode())
            envelopes.append(
                {"userId": peer.user_id, "deviceId": peer.device_id, "envelopeType": envelope_type, "ciphertext": ciphertext}
            )
        answer = self.api.call(
            "POST",
            "/v1/messages",
            {
                "protocolVersion": 2,
                "clientMessageId": client_message_id,
                "recipientUserId": recipient_user_id,
                "deviceEnvelopes": envelopes,
            },
        )
        answer["clientMessageId"] = client_message_id
        answer["envelopeTypes"] = {(e["userId"], e["deviceId"]): e["envelopeType"] for e in envelopes}
        return answer

    def send_v1(self, recipient: PeerDevice, body: bytes, client_message_id: Optional[str] = None) -> dict:
        """A V1 send: one ciphertext, the raw Olm message in base64 (no type byte), its
        payload bound to the one recipient device."""
        client_message_id = client_message_id or new_client_message_id()
        payload = self.payload_for(recipient, wire.KIND_MESSAGE, recipient.user_id, client_message_id, body)
        envelope_type, ciphertext = self.encrypt_for(recipient.address, payload.encode())
        answer = self.api.call(
            "POST",
            "/v1/messages",
            {
                "protocolVersion": 1,
                "clientMessageId": client_message_id,
                "recipientUserId": recipient.user_id,
                "encryptedEnvelope": ciphertext,
            },
        )
        answer["clientMessageId"] = client_message_id
        answer["olmType"] = envelope_type
        return answer

    # --- channels -------------------------------------------------------------------

    def create_channel(self, member_user_ids) -> dict:
        return self.api.call("POST", "/v1/channels", {"members": list(member_user_ids)})

    def channel(self, channel_id: str) -> dict:
        return self.api.call("GET", f"/v1/channels/{channel_id}")

    def share_group_session(self, channel_id: str) -> dict:
        """7.2 and 7.3: gives the own outbound Megolm session's key, at its current index,
        to every member device that does not have it yet."""
        session = self.outbound_groups.get(channel_id)
        if session is None:
            session = olm.OutboundGroupSession()
            self.outbound_groups[channel_id] = session
            self.shared_with[channel_id] = set()
        session_id = session.id
        session_key = b64decode(session.session_key)
        members = self.channel(channel_id)["devices"]
        for user in {m["userId"] for m in members}:
            self.fetch_devices(user)
        distributions = []
        for member in members:
            address = (member["userId"], member["deviceId"])
            if address == (self.user_id, self.device_id) or address in self.shared_with[channel_id]:
                continue
            peer = self.devices[address]
            payload = self.payload_for(
                peer,
                wire.KIND_SENDER_KEY,
                channel_id,
                session_id.replace("+", "-").replace("/", "_"),
                wire.sender_key_body(session_id, session_key),
            )
            envelope_type, ciphertext = self.encrypt_for(address, payload.encode())
            distributions.append(
                {"userId": peer.user_id, "deviceId": peer.device_id, "envelopeType": envelope_type, "ciphertext": ciphertext}
            )
        answer = {"stored": 0}
        if distributions:
            answer = self.api.call(
                "POST",
                f"/v1/channels/{channel_id}/sender-keys",
                {"sessionId": session_id, "distributions": distributions},
            )
        self.shared_with[channel_id].update((d["userId"], d["deviceId"]) for d in distributions)
        return answer

    def send_group(self, channel_id: str, body: bytes, client_message_id: Optional[str] = None) -> dict:
        self.share_group_session(channel_id)
        session = self.outbound_groups[channel_id]
        client_message_id = client_message_id or new_client_message_id()
        plaintext = GroupPlaintext(channel_id, self.user_id, self.device_id, client_message_id, now_ms(), body)
        ciphertext = session.encrypt(plaintext.encode())
        answer = self.api.call(
            "POST",
            f"/v1/channels/{channel_id}/messages",
            {"clientMessageId": client_message_id, "sessionId": session.id, "ciphertext": ciphertext},
        )
        answer["clientMessageId"] = client_message_id
        return answer

    # --- receiving ------------------------------------------------------------------

    def receive(self) -> list[Received]:
        """Reads the inbox to its end (REST), handles each item, then acknowledges
        everything read (a test client stores nothing, so handled means stored)."""
        results = []
        while True:
            page = self.api.call("GET", f"/v1/inbox?after={self.cursor}&limit=100")
            for item in page["items"]:
                results.append(self._handle(item))
                self.cursor = max(self.cursor, item["seq"])
            if page["items"]:
                self.api.call("POST", "/v1/inbox/ack", {"upTo": self.cursor})
            if not page["hasMore"]:
                return results

    def _sender(self, item) -> PeerDevice:
        address = (item["senderUserId"], item["senderDeviceId"])
        if address not in self.devices:
            self.fetch_devices(item["senderUserId"])
        peer = self.devices.get(address)
        if peer is None:
            raise ProtocolError("unknownSender")
        return peer

    def _olm_decrypt(self, peer: PeerDevice, envelope_type: str, ciphertext: str) -> bytes:
        """4.3: stored sessions first, then (pre-key only) a new inbound session."""
        if envelope_type == "preKey":
            message = olm.OlmPreKeyMessage(ciphertext)
        elif envelope_type == "normal":
            message = olm.OlmMessage(ciphertext)
        else:
            raise ProtocolError(f"malformed: envelopeType {envelope_type}")
        matching = 0
        for session in list(self.sessions.get(peer.address, [])):
            if envelope_type == "preKey" and not session.matches(message, peer.curve25519):
                continue
            matching += 1
            try:
                plaintext = _decrypt_bytes(session, message)
            except olm.OlmSessionError:
                continue
            self._touch(peer.address, session)
            return plaintext
        # A pre-key message of a session already held that none decrypts is a replay:
        # no second inbound session from it (3.7, 4.3).
        if envelope_type != "preKey" or matching:
            raise ProtocolError("undecryptable")
        session = olm.InboundSession(self.account, message, peer.curve25519)
        self.account.remove_one_time_keys(session)
        plaintext = _decrypt_bytes(session, message)
        self._touch(peer.address, session)
        return plaintext

    def _check_payload(self, payload: Payload, peer: PeerDevice, conversation: Optional[str]):
        if (payload.sender_user_id, payload.sender_device_id, payload.sender_ed25519) != (
            peer.user_id,
            peer.device_id,
            b64decode(peer.ed25519),
        ):
            raise ProtocolError("wrong sender")
        if (payload.recipient_user_id, payload.recipient_device_id, payload.recipient_curve25519) != (
            self.user_id,
            self.device_id,
            b64decode(self.curve25519),
        ):
            raise ProtocolError("wrong recipient")
        if conversation is not None and payload.conversation != conversation:
            raise ProtocolError("wrong conversation")

    def _handle(self, item) -> Received:
        kind = item["type"]
        try:
            if kind == "envelope":
                return self._handle_envelope(item)
            if kind == "senderKey":
                return self._handle_sender_key(item)
            if kind == "groupMessage":
                return self._handle_group_message(item)
        except (ProtocolError, wire.WireError, olm.OlmSessionError, olm.OlmGroupSessionError) as error:
            return Received("failed", item, error=str(error))
        return Received("other", item)

    def _handle_envelope(self, item) -> Received:
        if item["messageId"] in self.seen_message_ids:
            return Received("other", item)
        self.seen_message_ids.add(item["messageId"])
        peer = self._sender(item)
        envelope_type = item["envelopeType"]
        if envelope_type == "legacy":
            raise ProtocolError("this client reads no V1")
        payload = Payload.decode(self._olm_decrypt(peer, envelope_type, item["ciphertext"]))
        if payload.kind != wire.KIND_MESSAGE:
            raise ProtocolError("an envelope carries a payload that is not a message")
        self._check_payload(payload, peer, None if peer.user_id == self.user_id else self.user_id)
        _check_bound_to_item(item, payload.client_message_id, payload.timestamp_ms)
        return Received("message", item, payload=payload)

    def _handle_sender_key(self, item) -> Received:
        peer = self._sender(item)
        payload = Payload.decode(self._olm_decrypt(peer, item["envelopeType"], item["ciphertext"]))
        if payload.kind != wire.KIND_SENDER_KEY:
            raise ProtocolError("the payload is not a sender key")
        self._check_payload(payload, peer, item["channelId"])
        session_id, session_key = wire.decode_sender_key_body(payload.body)
        if session_id != item["sessionId"]:
            raise ProtocolError("the sender key's session ID does not match the session it carries")
        inbound = olm.InboundGroupSession(b64encode(session_key))
        if inbound.id != session_id:
            raise ProtocolError("the session key is invalid")
        key = (item["channelId"], peer.user_id, peer.device_id, session_id)
        self.inbound_groups.setdefault(key, inbound)
        return Received("senderKey", item, payload=payload)

    def _handle_group_message(self, item) -> Received:
        if item["messageId"] in self.seen_message_ids:
            return Received("other", item)
        self.seen_message_ids.add(item["messageId"])
        peer = self._sender(item)
        key = (item["channelId"], peer.user_id, peer.device_id, item["sessionId"])
        session = self.inbound_groups.get(key)
        if session is None:
            raise ProtocolError("undecryptable: no inbound session")
        plaintext, _index = _group_decrypt_bytes(session, item["ciphertext"])
        group = GroupPlaintext.decode(plaintext)
        if group.channel_id != item["channelId"]:
            raise ProtocolError("wrong channel")
        if (group.sender_user_id, group.sender_device_id) != peer.address:
            raise ProtocolError("wrong sender")
        _check_bound_to_item(item, group.client_message_id, group.timestamp_ms)
        return Received("groupMessage", item, group=group)


__all__ = ["Api", "ApiError", "OlmDevice", "PeerDevice", "ProtocolError", "Received", "replace"]
