"""The Python binding against a real Courier server (scripts/test-bindings-uniffi.sh runs
it under scripts/with-test-server.sh: device limit 3, rate limits off)."""

import asyncio
import contextlib
import gc
import os
import shutil
import sqlite3

import pytest

from conftest import GUARD_SECONDS, PASSWORD, FaultProxy, Recorder, courier, new_store_key, sha256, unique_name

Kind = courier.AppEventKind
Error = courier.CourierError


def run(coroutine):
    return asyncio.run(coroutine)


async def guarded(awaitable):
    """Awaits with a guard against a hang (not a timing check)."""
    return await asyncio.wait_for(awaitable, GUARD_SECONDS)


def test_two_users_with_two_devices_exchange_direct_and_group_messages(accounts):
    async def scenario():
        alice, bob = unique_name("alice"), unique_name("bob")
        a1 = await accounts.register(alice, "a1")
        a2 = await accounts.login(alice, "a2")
        b1 = await accounts.register(bob, "b1")
        b2 = await accounts.login(bob, "b2")
        everyone = [a1, a2, b1, b2]
        handles = [d.client.start_receiving(d.listener) for d in everyone]
        try:
            for device in everyone:
                device.listener.wait_connected()

            hello = await a1.client.send(b1.user_id, b"hello bob", None)
            for device in (b1, b2):
                message = device.listener.wait_message(hello.message_id)
                assert message.body == b"hello bob"
                assert message.sender == a1.address
                assert message.conversation_user_id == a1.user_id
                assert message.client_message_id == hello.client_message_id
                assert not message.from_own_device
            copy = a2.listener.wait_message(hello.message_id)
            assert copy.from_own_device
            assert copy.conversation_user_id == b1.user_id

            reply = await b2.client.send(a1.user_id, b"hi alice", "reply-1")
            assert reply.client_message_id == "reply-1"
            for device in (a1, a2):
                message = device.listener.wait_message(reply.message_id)
                assert message.body == b"hi alice"
                assert message.client_message_id == "reply-1"
            assert b1.listener.wait_message(reply.message_id).from_own_device

            channel = await a1.client.create_channel([b1.user_id])
            assert set(channel.members) == {a1.user_id, b1.user_id}
            assert {(d.user_id, d.device_id) for d in channel.devices} == {
                (d.address.user_id, d.address.device_id) for d in everyone
            }
            group = await a1.client.send_group(channel.channel_id, b"hello channel", None)
            for device in (a2, b1, b2):
                message = device.listener.wait_group_message(group.message_id)
                assert message.channel_id == channel.channel_id
                assert message.sender == a1.address
                assert message.body == b"hello channel"
            answer = await b1.client.send_group(channel.channel_id, b"channel reply", None)
            for device in (a1, a2, b2):
                assert device.listener.wait_group_message(answer.message_id).body == b"channel reply"
        finally:
            for handle in handles:
                handle.cancel()
            for handle in handles:
                await guarded(handle.wait())

    run(scenario())


def test_a_fourth_device_gets_the_device_limit_with_its_counts(accounts):
    async def scenario():
        carol = unique_name("carol")
        devices = [
            await accounts.register(carol, "c1"),
            await accounts.login(carol, "c2"),
            await accounts.login(carol, "c3"),
        ]
        with pytest.raises(Error.DeviceLimitReached) as raised:
            await accounts.login(carol, "c4")
        error = raised.value
        assert error.count == 3
        assert error.limit == 3
        assert set(error.device_ids) == {d.address.device_id for d in devices}
        assert error.code() == "device_limit_reached"
        assert error.server_code() == "device_limit_reached"
        assert error.status() is not None
        assert not error.is_retryable()

    run(scenario())


def test_a_cancelled_receive_loop_stops(accounts):
    async def scenario():
        rita = await accounts.register(unique_name("rita"))
        sam = await accounts.register(unique_name("sam"))
        first = rita.client.start_receiving(rita.listener)
        rita.listener.wait_connected()
        with pytest.raises(Error.AlreadyReceiving) as twice:
            rita.client.start_receiving(Recorder())
        assert twice.value.code() == "already_receiving"

        first.cancel()
        await guarded(first.wait())
        assert first.is_finished()
        rita.listener.wait_stopped()

        # A new loop may start now; what arrives goes to it, not to the stopped one.
        following = Recorder()
        second = rita.client.start_receiving(following)
        sent = await sam.client.send(rita.user_id, b"after the stop", None)
        following.wait_message(sent.message_id)
        assert rita.listener.snapshot(lambda: rita.listener._find(Kind.MESSAGE, sent.message_id)) is None
        second.cancel()
        await guarded(second.wait())

    run(scenario())


def test_a_wrong_store_key_is_a_typed_error_and_leaves_the_store_as_it_was(accounts):
    async def scenario():
        dora = await accounts.register(unique_name("dora"))
        own = dora.address
        path, key = dora.path, dora.key
        del dora
        gc.collect()
        before = sha256(path)

        with pytest.raises(Error.WrongStoreKey) as raised:
            await courier.CourierClient.open(path, new_store_key())
        assert raised.value.code() == "wrong_store_key"
        assert not raised.value.is_retryable()
        assert sha256(path) == before, "the store file is untouched"
        with pytest.raises(Error.InvalidArgument) as short:
            await courier.CourierClient.open(path, b"short")
        assert short.value.code() == "invalid_argument"

        reopened = await courier.CourierClient.open(path, key)
        assert reopened.own_device() == own
        await reopened.pending_events(10)

    run(scenario())


def test_a_store_from_a_newer_version_is_a_typed_error(accounts, tmp_path):
    async def scenario():
        emil = await accounts.register(unique_name("emil"))
        path, key = emil.path, emil.key
        del emil
        gc.collect()
        newer = str(tmp_path / "newer.db")
        shutil.copyfile(path, newer)
        # Closed before hashing: the last connection to close folds the WAL into the file.
        with contextlib.closing(sqlite3.connect(newer)) as connection:
            connection.execute("PRAGMA user_version = 1000")
        before = sha256(newer)

        with pytest.raises(Error.StoreTooNew) as raised:
            await courier.CourierClient.open(newer, key)
        assert raised.value.found == 1000
        assert 1 <= raised.value.supported < 1000
        assert raised.value.code() == "store_too_new"
        assert sha256(newer) == before, "the newer store is left as it was"

    run(scenario())


def test_a_send_while_the_server_is_unreachable_is_retried_under_its_client_message_id_and_arrives_once(
    accounts, server_url
):
    async def scenario():
        proxy = FaultProxy(server_url)
        try:
            sender = await accounts.register(unique_name("sid"), url=proxy.url)
            recipient = await accounts.register(unique_name("rosa"))
            await sender.client.send(recipient.user_id, b"first", None)

            # Unreachable: nothing arrives at the server.
            proxy.down()
            with pytest.raises(Error.Network) as down:
                await sender.client.send(recipient.user_id, b"kept", "retry-down-1")
            assert down.value.code() == "network"
            assert down.value.is_retryable()
            proxy.up()
            assert await sender.client.send_unsent() == 1, "the store kept the failed send"
            kept = await sender.client.send(recipient.user_id, b"kept", "retry-down-1")
            assert kept.client_message_id == "retry-down-1"

            # The server stores the message but its answer is lost: the retry gets it.
            proxy.drop_responses()
            with pytest.raises(Error.Network) as lost:
                await sender.client.send(recipient.user_id, b"once", "retry-lost-1")
            assert lost.value.is_retryable()
            proxy.up()
            assert await sender.client.send_unsent() == 1, "the store kept the send whose answer was lost"
            once = await sender.client.send(recipient.user_id, b"once", "retry-lost-1")

            await recipient.client.receive_until_caught_up()
            events = await recipient.client.pending_events(1000)
            messages = [e.kind for e in events if isinstance(e.kind, Kind.MESSAGE)]
            kepts = [m for m in messages if m.client_message_id == "retry-down-1"]
            assert [(m.message_id, m.body) for m in kepts] == [(kept.message_id, b"kept")]
            onces = [m for m in messages if m.client_message_id == "retry-lost-1"]
            assert [(m.message_id, m.body) for m in onces] == [(once.message_id, b"once")], "one, not two"
        finally:
            proxy.close()

    run(scenario())


def test_calls_after_log_out_and_after_removal_from_another_device_are_typed_errors(accounts):
    async def scenario():
        lena = unique_name("lena")
        l1 = await accounts.register(lena, "l1")
        l2 = await accounts.login(lena, "l2")
        otto = await accounts.register(unique_name("otto"))

        await l2.client.log_out()
        with pytest.raises(Error.LoggedOut) as after_log_out:
            await l2.client.send(otto.user_id, b"after log-out", None)
        assert after_log_out.value.code() == "logged_out"
        with pytest.raises(Error.LoggedOut):
            await l2.client.privacy_settings()

        l3 = await accounts.login(lena, "l3")
        await l1.client.remove_device(l3.address.device_id)
        with pytest.raises(Error.DeviceRemoved) as removed:
            await l3.client.send(otto.user_id, b"after removal", None)
        assert removed.value.code() == "device_removed"
        assert not removed.value.is_retryable()
        # Its receive loop ends with the same typed error.
        handle = l3.client.start_receiving(l3.listener)
        await guarded(handle.wait())
        l3.listener.wait_stopped()
        assert any(isinstance(e, Error.DeviceRemoved) for e in l3.listener.errors), l3.listener.errors
        # A bad argument is typed too.
        with pytest.raises(Error.InvalidArgument) as invalid:
            await l1.client.send("not-a-uuid", b"x", None)
        assert invalid.value.code() == "invalid_argument"

    run(scenario())


def test_a_listener_that_raises_is_reported_and_its_events_come_again(accounts):
    async def scenario():
        recipient = await accounts.register(unique_name("tara"))
        sender = await accounts.register(unique_name("sven"))
        listener = Recorder(refuse_first=1)
        handle = recipient.client.start_receiving(listener)
        first = await sender.client.send(recipient.user_id, b"refused once", None)

        failure = listener.wait_for(
            "ListenerFailed",
            lambda: next((e for e in listener.errors if isinstance(e, Error.ListenerFailed)), None),
        )
        assert failure.code() == "listener_failed"
        assert failure.is_retryable()
        assert "the app's database is full" in failure.detail

        assert listener.wait_message(first.message_id).body == b"refused once"
        refused = listener.snapshot(lambda: [e.seq for e in listener.batches[0]])
        listener.wait_for(
            "the refused events again",
            lambda: set(refused) <= {e.seq for e in listener.events},
        )
        assert not handle.is_finished(), "the loop survives the listener's failure"

        second = await sender.client.send(recipient.user_id, b"accepted", None)
        listener.wait_message(second.message_id)
        handle.cancel()
        await guarded(handle.wait())

    run(scenario())


def test_dropping_the_client_while_its_loop_runs_stops_the_loop(accounts):
    async def scenario():
        vera = await accounts.register(unique_name("vera"))
        listener = vera.listener
        handle = vera.client.start_receiving(listener)
        listener.wait_connected()
        del vera
        gc.collect()
        await guarded(handle.wait())
        assert handle.is_finished()
        listener.wait_stopped()

    run(scenario())



def test_deleting_the_account_needs_the_password_and_retires_every_device_of_it(accounts, tmp_path):
    async def scenario():
        nora = unique_name("nora")
        # The test server takes accounts openly: the registration token goes through as None.
        path, key = str(tmp_path / "nora-n1.db"), new_store_key()
        n1 = await courier.CourierClient.register(
            accounts.server_url, path, key, nora, PASSWORD, "n1", None
        )
        n2 = await accounts.login(nora, "n2")

        with pytest.raises(Error.WrongPassword) as wrong:
            await n1.delete_account("not the password")
        assert wrong.value.code() == "wrong_password"
        assert wrong.value.server_code() == "wrong_password"
        assert wrong.value.status() == 403
        assert not wrong.value.is_retryable()
        # Nothing changed: both devices still work.
        await n1.privacy_settings()
        await n2.client.privacy_settings()

        await n1.delete_account(PASSWORD)
        with pytest.raises(Error.AccountDeleted) as deleted:
            await n1.privacy_settings()
        assert deleted.value.code() == "account_deleted"
        with pytest.raises(Error.AccountDeleted):
            await courier.CourierClient.open(path, key)
        with pytest.raises(Error.DeviceRemoved):
            await n2.client.privacy_settings()
        with pytest.raises(Error.InvalidCredentials):
            await accounts.login(nora, "n3")
        with pytest.raises(Error.UsernameTaken):
            await accounts.register(nora, "n4")

    run(scenario())
