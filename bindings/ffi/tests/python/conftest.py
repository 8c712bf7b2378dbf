"""Helpers of the Python binding tests: accounts on the test server, a listener that
records what the receive loop hands it, and a TCP proxy that takes the server away.

The generated module `courier_ffi` (and libcourier_ffi.so beside it) is found through
COURIER_FFI_PYTHON, the directory scripts/test-bindings-uniffi.sh generates it into."""

import hashlib
import itertools
import os
import secrets
import socket
import sys
import threading
import time
from urllib.parse import urlparse

import pytest

sys.path.insert(0, os.environ.get("COURIER_FFI_PYTHON", os.path.dirname(__file__)))

import courier_ffi as courier  # noqa: E402

# How long a wait may take before the test gives up: a guard against a hang, not a
# timing check.
GUARD_SECONDS = 120.0
PASSWORD = "correct horse battery staple"

_run_tag = secrets.token_hex(3)
_names = itertools.count()


def unique_name(prefix):
    """A username of its own for each account (3 to 32 characters, a letter first)."""
    return f"{prefix}-{_run_tag}-{next(_names)}"


def new_store_key():
    return secrets.token_bytes(32)


def sha256(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


@pytest.fixture(scope="session")
def server_url():
    url = os.environ.get("COURIER_TEST_SERVER")
    if not url:
        pytest.fail("COURIER_TEST_SERVER is not set: run under scripts/with-test-server.sh")
    return url


class Recorder(courier.EventListener):
    """An EventListener that records every call. It refuses (raises on) its first
    `refuse_first` batches, as an app whose database failed would."""

    def __init__(self, refuse_first=0):
        self._changed = threading.Condition()
        self.batches = []  # every batch handed over, refused or not
        self.events = []  # events of accepted batches
        self.states = []
        self.errors = []
        self._refuse = refuse_first

    def on_events(self, events):
        with self._changed:
            self.batches.append(list(events))
            self._changed.notify_all()
            if self._refuse > 0:
                self._refuse -= 1
                raise RuntimeError("the app's database is full")
            self.events.extend(events)

    def on_connection_state(self, state):
        with self._changed:
            self.states.append(state)
            self._changed.notify_all()

    def on_error(self, error):
        with self._changed:
            self.errors.append(error)
            self._changed.notify_all()

    def wait_for(self, what, probe):
        """Waits until `probe()` (called under the recorder's lock) is truthy; returns it."""
        deadline = time.monotonic() + GUARD_SECONDS
        with self._changed:
            while True:
                found = probe()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"gave up waiting for {what}; states={self.states} "
                        f"errors={self.errors} events={len(self.events)}"
                    )
                self._changed.wait(left)

    def snapshot(self, read):
        with self._changed:
            return read()

    def wait_connected(self):
        return self.wait_for(
            "the stream to connect",
            lambda: any(isinstance(s, courier.ConnectionState.CONNECTED) for s in self.states),
        )

    def wait_stopped(self):
        return self.wait_for(
            "the loop to stop",
            lambda: self.states and isinstance(self.states[-1], courier.ConnectionState.STOPPED),
        )

    def _find(self, cls, message_id):
        for event in self.events:
            if isinstance(event.kind, cls) and event.kind.message_id == message_id:
                return event.kind
        return None

    def wait_message(self, message_id):
        return self.wait_for(
            f"message {message_id}", lambda: self._find(courier.AppEventKind.MESSAGE, message_id)
        )

    def wait_group_message(self, message_id):
        return self.wait_for(
            f"group message {message_id}",
            lambda: self._find(courier.AppEventKind.GROUP_MESSAGE, message_id),
        )


class Device:
    """One logged-in device: its client, where its store is and the key that opens it."""

    def __init__(self, client, path, key):
        self.client = client
        self.path = path
        self.key = key
        self.listener = Recorder()

    @property
    def user_id(self):
        return self.client.own_device().user_id

    @property
    def address(self):
        return self.client.own_device()


class Accounts:
    def __init__(self, server_url, directory):
        self.server_url = server_url
        self.directory = directory

    def _path(self, username, device):
        return os.path.join(self.directory, f"{username}-{device}.db")

    async def register(self, username, device="phone", url=None):
        path, key = self._path(username, device), new_store_key()
        client = await courier.CourierClient.register(
            url or self.server_url, path, key, username, PASSWORD, device
        )
        return Device(client, path, key)

    async def login(self, username, device, url=None):
        path, key = self._path(username, device), new_store_key()
        client = await courier.CourierClient.login(
            url or self.server_url, path, key, username, PASSWORD, device
        )
        return Device(client, path, key)


@pytest.fixture
def accounts(server_url, tmp_path):
    return Accounts(server_url, str(tmp_path))


class FaultProxy:
    """A TCP proxy in front of the test server. `down()` closes its port and every
    connection (the server is unreachable); `drop_responses()` passes requests on but
    cuts each connection when the server answers (the server acted, the client never
    hears); `up()` forwards again, on the same port."""

    def __init__(self, upstream):
        parsed = urlparse(upstream)
        self._upstream = (parsed.hostname, parsed.port)
        self._lock = threading.Lock()
        self._live = set()
        self._dropping = False
        self._listener = self._bind(0)
        self.port = self._listener.getsockname()[1]
        self._accept(self._listener)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _bind(port):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        return listener

    def _accept(self, listener):
        def run():
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                try:
                    server = socket.create_connection(self._upstream)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._live.update((client, server))
                self._pump(client, server, cut_on_data=False)
                self._pump(server, client, cut_on_data=self._dropping)

        threading.Thread(target=run, daemon=True).start()

    def _pump(self, source, target, cut_on_data):
        def run():
            try:
                while True:
                    data = source.recv(65536)
                    if not data or cut_on_data:
                        break
                    target.sendall(data)
            except OSError:
                pass
            finally:
                self._close(source)
                self._close(target)

        threading.Thread(target=run, daemon=True).start()

    def _close(self, sock):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        with self._lock:
            self._live.discard(sock)

    def _cut_all(self):
        with self._lock:
            sockets = list(self._live)
        for sock in sockets:
            self._close(sock)

    def down(self):
        # shutdown() wakes the thread blocked in accept(); close() alone does not.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._cut_all()

    def up(self):
        self._dropping = False
        self._cut_all()
        if self._listener.fileno() == -1:
            self._listener = self._bind(self.port)
            self._accept(self._listener)

    def drop_responses(self):
        self.up()
        self._dropping = True

    def close(self):
        self.down()
