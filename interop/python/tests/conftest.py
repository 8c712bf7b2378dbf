"""Fixtures of the interop tests: the server (COURIER_TEST_SERVER, set by
scripts/with-test-server.sh), SDK devices through the SDK's Python binding (the
generated module `courier_ffi`, found through COURIER_FFI_PYTHON, as
scripts/test-interop.sh builds it), and libolm devices (courier_interop)."""

import asyncio
import itertools
import os
import secrets
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
if os.environ.get("COURIER_FFI_PYTHON"):
    sys.path.insert(0, os.environ["COURIER_FFI_PYTHON"])

import courier_ffi as courier  # noqa: E402

from courier_interop.client import OlmDevice  # noqa: E402

PASSWORD = "correct horse battery staple"
Kind = courier.AppEventKind

_run_tag = secrets.token_hex(3)
_names = itertools.count()


def unique_name(prefix):
    """A username of its own for each account (3 to 32 characters, a letter first)."""
    return f"{prefix}-{_run_tag}-{next(_names)}"


def run(coroutine):
    return asyncio.run(coroutine)


class SdkDevice:
    """A device on the SDK (through its Python binding) and every event it handed the app."""

    def __init__(self, client, username):
        self.client = client
        self.username = username
        self.events = []

    @property
    def user_id(self):
        return self.client.own_device().user_id

    @property
    def device_id(self):
        return self.client.own_device().device_id

    @property
    def address(self):
        return (self.user_id, self.device_id)

    def receive(self):
        """Takes in everything the stream holds, then answers the new app events (each
        confirmed, so it is handed over once)."""

        async def go():
            await self.client.receive_until_caught_up()
            new = []
            while True:
                batch = await self.client.pending_events(1000)
                if not batch:
                    return new
                new.extend(batch)
                await self.client.confirm_events(batch[-1].seq)

        new = run(go())
        self.events.extend(new)
        return [event.kind for event in new]

    def send(self, user_id, body, client_message_id=None):
        return run(self.client.send(user_id, body, client_message_id))

    def send_group(self, channel_id, body, client_message_id=None):
        return run(self.client.send_group(channel_id, body, client_message_id))

    def create_channel(self, user_ids):
        return run(self.client.create_channel(list(user_ids)))


def only(kinds, cls, message_id=None):
    """The one event of type `cls` (with that message ID, when given) among `kinds`."""
    found = [k for k in kinds if isinstance(k, cls) and (message_id is None or k.message_id == message_id)]
    assert len(found) == 1, f"expected one {cls.__name__} for {message_id}, got {kinds}"
    return found[0]


@pytest.fixture(scope="session")
def server_url():
    url = os.environ.get("COURIER_TEST_SERVER")
    if not url:
        pytest.fail("COURIER_TEST_SERVER is not set: run under scripts/with-test-server.sh")
    return url


class Devices:
    def __init__(self, server_url, directory):
        self.server_url = server_url
        self.directory = directory

    def sdk(self, username=None, device="sdk"):
        """Registers a user and logs in its first device on the SDK."""
        username = username or unique_name("sdk")
        path = os.path.join(self.directory, f"{username}-{device}.db")
        client = run(
            courier.CourierClient.register(
                self.server_url, path, secrets.token_bytes(32), username, PASSWORD, device
            )
        )
        return SdkDevice(client, username)

    def sdk_login(self, username, device):
        """Another SDK device of an existing user."""
        path = os.path.join(self.directory, f"{username}-{device}.db")
        client = run(
            courier.CourierClient.login(self.server_url, path, secrets.token_bytes(32), username, PASSWORD, device)
        )
        return SdkDevice(client, username)

    def olm(self, one_time_keys=10, fallback=True):
        """Registers a user and logs in its first device on libolm."""
        return OlmDevice.register(
            self.server_url, unique_name("olm"), PASSWORD, one_time_keys=one_time_keys, fallback=fallback
        )


@pytest.fixture
def devices(server_url, tmp_path):
    return Devices(server_url, str(tmp_path))
