// The Kotlin binding against a real Courier server (scripts/test-bindings-uniffi.sh runs
// it under scripts/with-test-server.sh: device limit 3, rate limits off). Plain main():
// each test prints PASS or FAIL, the last line counts them, the exit code is 1 on any
// failure.

import dev.courier.AppEventKind
import dev.courier.ConnectionState
import dev.courier.CourierClient
import dev.courier.CourierException
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import java.nio.file.Files
import java.nio.file.Path
import kotlin.system.exitProcess
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertTrue

suspend fun twoUsersWithTwoDevicesExchangeDirectAndGroupMessages() {
    val alice = uniqueName("alice")
    val bob = uniqueName("bob")
    val a1 = register(alice, "a1")
    val a2 = login(alice, "a2")
    val b1 = register(bob, "b1")
    val b2 = login(bob, "b2")
    val all = listOf(a1, a2, b1, b2)
    val handles = all.map { it.client.startReceiving(it.listener) }
    try {
        all.forEach { it.listener.awaitConnected() }

        val hello = a1.client.send(b1.userId, "hello bob".toByteArray(), null)
        for (device in listOf(b1, b2)) {
            val message = device.listener.awaitMessage(hello.messageId)
            assertContentEquals("hello bob".toByteArray(), message.body)
            assertEquals(a1.client.ownDevice(), message.sender)
            assertEquals(a1.userId, message.conversationUserId)
            assertEquals(hello.clientMessageId, message.clientMessageId)
            assertFalse(message.fromOwnDevice)
        }
        val copy = a2.listener.awaitMessage(hello.messageId)
        assertTrue(copy.fromOwnDevice, "alice's other device gets a copy of what she sent")
        assertEquals(b1.userId, copy.conversationUserId)

        val reply = b2.client.send(a1.userId, "hi alice".toByteArray(), "reply-1")
        assertEquals("reply-1", reply.clientMessageId)
        for (device in listOf(a1, a2)) {
            val message = device.listener.awaitMessage(reply.messageId)
            assertContentEquals("hi alice".toByteArray(), message.body)
            assertEquals("reply-1", message.clientMessageId)
        }
        assertTrue(b1.listener.awaitMessage(reply.messageId).fromOwnDevice)

        val channel = a1.client.createChannel(listOf(b1.userId))
        assertEquals(setOf(a1.userId, b1.userId), channel.members.toSet())
        assertEquals(all.map { it.client.ownDevice() }.toSet(), channel.devices.toSet())
        val group = a1.client.sendGroup(channel.channelId, "hello channel".toByteArray(), null)
        for (device in listOf(a2, b1, b2)) {
            val message = device.listener.awaitGroupMessage(group.messageId)
            assertEquals(channel.channelId, message.channelId)
            assertEquals(a1.client.ownDevice(), message.sender)
            assertContentEquals("hello channel".toByteArray(), message.body)
        }
        val answer = b1.client.sendGroup(channel.channelId, "channel reply".toByteArray(), null)
        for (device in listOf(a1, a2, b2)) {
            assertContentEquals("channel reply".toByteArray(), device.listener.awaitGroupMessage(answer.messageId).body)
        }
    } finally {
        handles.forEach { it.cancel() }
        handles.forEach { it.wait() }
        all.forEach { it.client.close() }
    }
}

suspend fun aFourthDeviceGetsTheDeviceLimitWithItsCounts() {
    val carol = uniqueName("carol")
    val devices = listOf(register(carol, "c1"), login(carol, "c2"), login(carol, "c3"))
    val error = expectThrows<CourierException.DeviceLimitReached> { login(carol, "c4") }
    assertEquals(3u, error.count)
    assertEquals(3u, error.limit)
    assertEquals(devices.map { it.client.ownDevice().deviceId }.toSet(), error.deviceIds.toSet())
    assertEquals("device_limit_reached", error.code())
    assertEquals("device_limit_reached", error.serverCode())
    assertNotNull(error.status())
    assertFalse(error.isRetryable())
    devices.forEach { it.client.close() }
}

suspend fun aCancelledReceiveLoopStops() {
    val rita = register(uniqueName("rita"))
    val sam = register(uniqueName("sam"))
    val first = rita.client.startReceiving(rita.listener)
    rita.listener.awaitConnected()
    val twice = expectThrows<CourierException.AlreadyReceiving> { rita.client.startReceiving(Recorder()) }
    assertEquals("already_receiving", twice.code())

    first.cancel()
    withTimeout(GUARD_MILLIS) { first.wait() }
    assertTrue(first.isFinished())
    rita.listener.awaitStopped()

    // A new loop may start now; what arrives goes to it, not to the stopped one.
    val next = Recorder()
    val second = rita.client.startReceiving(next)
    val sent = sam.client.send(rita.userId, "after the stop".toByteArray(), null)
    next.awaitMessage(sent.messageId)
    assertTrue(rita.listener.snapshot { events.none { (it.kind as? AppEventKind.Message)?.messageId == sent.messageId } })
    second.cancel()
    second.wait()
    rita.client.close()
    sam.client.close()
}

suspend fun aWrongStoreKeyIsATypedErrorAndLeavesTheStoreAsItWas() {
    val dora = register(uniqueName("dora"))
    val own = dora.client.ownDevice()
    dora.client.close()
    val before = sha256(dora.path)

    val error = expectThrows<CourierException.WrongStoreKey> { CourierClient.open(dora.path, newStoreKey()) }
    assertEquals("wrong_store_key", error.code())
    assertFalse(error.isRetryable())
    assertEquals(before, sha256(dora.path), "the store file is untouched")
    val short = expectThrows<CourierException.InvalidArgument> { CourierClient.open(dora.path, ByteArray(5)) }
    assertEquals("invalid_argument", short.code())

    val reopened = CourierClient.open(dora.path, dora.key)
    assertEquals(own, reopened.ownDevice())
    reopened.pendingEvents(10u)
    reopened.close()
}

suspend fun aStoreFromANewerVersionIsATypedError() {
    val emil = register(uniqueName("emil"))
    emil.client.close()
    val newer = scratch.resolve("newer-${System.nanoTime()}.db")
    Files.copy(Path.of(emil.path), newer)
    val sqlite = ProcessBuilder("sqlite3", newer.toString(), "PRAGMA user_version = 1000").inheritIO().start()
    assertEquals(0, sqlite.waitFor(), "sqlite3 bumps the schema version")
    val before = sha256(newer.toString())

    val error = expectThrows<CourierException.StoreTooNew> { CourierClient.open(newer.toString(), emil.key) }
    assertEquals(1000L, error.found)
    assertTrue(error.supported in 1 until 1000, "supported: ${error.supported}")
    assertEquals("store_too_new", error.code())
    assertEquals(before, sha256(newer.toString()), "the newer store is left as it was")
}

suspend fun aSendWhileTheServerIsUnreachableIsRetriedUnderItsClientMessageIdAndArrivesOnce() {
    FaultProxy(serverUrl).use { proxy ->
        val sender = register(uniqueName("sid"), url = proxy.url)
        val recipient = register(uniqueName("rosa"))
        sender.client.send(recipient.userId, "first".toByteArray(), null)

        // Unreachable: nothing arrives at the server.
        proxy.down()
        val down = expectThrows<CourierException.Network> {
            sender.client.send(recipient.userId, "kept".toByteArray(), "retry-down-1")
        }
        assertEquals("network", down.code())
        assertTrue(down.isRetryable())
        proxy.up()
        assertEquals(1u, sender.client.sendUnsent(), "the store kept the failed send")
        val kept = sender.client.send(recipient.userId, "kept".toByteArray(), "retry-down-1")
        assertEquals("retry-down-1", kept.clientMessageId)

        // The server stores the message but its answer is lost: the retry gets the same one.
        proxy.dropResponses()
        val lost = expectThrows<CourierException.Network> {
            sender.client.send(recipient.userId, "once".toByteArray(), "retry-lost-1")
        }
        assertTrue(lost.isRetryable())
        proxy.up()
        assertEquals(1u, sender.client.sendUnsent(), "the store kept the send whose answer was lost")
        val once = sender.client.send(recipient.userId, "once".toByteArray(), "retry-lost-1")

        recipient.client.receiveUntilCaughtUp()
        val messages = recipient.client.pendingEvents(1000u).mapNotNull { it.kind as? AppEventKind.Message }
        val kepts = messages.filter { it.clientMessageId == "retry-down-1" }
        assertEquals(1, kepts.size, "one message under retry-down-1")
        assertEquals(kept.messageId, kepts.single().messageId)
        assertContentEquals("kept".toByteArray(), kepts.single().body)
        val onces = messages.filter { it.clientMessageId == "retry-lost-1" }
        assertEquals(1, onces.size, "one message under retry-lost-1, not two")
        assertEquals(once.messageId, onces.single().messageId)
        assertContentEquals("once".toByteArray(), onces.single().body)
        sender.client.close()
        recipient.client.close()
    }
}

suspend fun callsAfterLogOutAndAfterRemovalFromAnotherDeviceAreTypedErrors() {
    val lena = uniqueName("lena")
    val l1 = register(lena, "l1")
    val l2 = login(lena, "l2")
    val otto = register(uniqueName("otto"))

    l2.client.logOut()
    val afterLogOut = expectThrows<CourierException.LoggedOut> {
        l2.client.send(otto.userId, "after log-out".toByteArray(), null)
    }
    assertEquals("logged_out", afterLogOut.code())
    expectThrows<CourierException.LoggedOut> { l2.client.privacySettings() }

    val l3 = login(lena, "l3")
    l1.client.removeDevice(l3.client.ownDevice().deviceId)
    val removed = expectThrows<CourierException.DeviceRemoved> {
        l3.client.send(otto.userId, "after removal".toByteArray(), null)
    }
    assertEquals("device_removed", removed.code())
    assertFalse(removed.isRetryable())
    // Its receive loop ends with the same typed error.
    val handle = l3.client.startReceiving(l3.listener)
    withTimeout(GUARD_MILLIS) { handle.wait() }
    l3.listener.awaitStopped()
    assertTrue(l3.listener.snapshot { errors.any { it is CourierException.DeviceRemoved } }, "errors: ${l3.listener.errors}")
    // A bad argument is typed too.
    val invalid = expectThrows<CourierException.InvalidArgument> { l1.client.send("not-a-uuid", ByteArray(1), null) }
    assertEquals("invalid_argument", invalid.code())
    listOf(l1, l2, l3, otto).forEach { it.client.close() }
}

suspend fun aListenerThatThrowsIsReportedAndItsEventsComeAgain() {
    val tara = uniqueName("tara")
    val recipient = register(tara)
    val sender = register(uniqueName("sven"))
    val listener = Recorder(refuseFirst = 1)
    val handle = recipient.client.startReceiving(listener)
    val first = sender.client.send(recipient.userId, "refused once".toByteArray(), null)

    val failure = listener.await("ListenerFailed") { errors.firstNotNullOfOrNull { it as? CourierException.ListenerFailed } }
    assertEquals("listener_failed", failure.code())
    assertTrue(failure.isRetryable())
    assertTrue(failure.detail.contains("the app's database is full"), failure.detail)

    assertContentEquals("refused once".toByteArray(), listener.awaitMessage(first.messageId).body)
    val refusedSeqs = listener.snapshot { batches.first().map { it.seq } }
    listener.await("the refused events again") { refusedSeqs.takeIf { seqs -> events.map { it.seq }.containsAll(seqs) } }
    assertFalse(handle.isFinished(), "the loop survives the listener's failure")

    val second = sender.client.send(recipient.userId, "accepted".toByteArray(), null)
    listener.awaitMessage(second.messageId)
    handle.cancel()
    handle.wait()
    recipient.client.close()
    sender.client.close()
}

suspend fun closingTheClientWhileItsLoopRunsStopsTheLoop() {
    val vera = register(uniqueName("vera"))
    val handle = vera.client.startReceiving(vera.listener)
    vera.listener.awaitConnected()
    vera.client.close()
    withTimeout(GUARD_MILLIS) { handle.wait() }
    assertTrue(handle.isFinished())
    vera.listener.awaitStopped()
    // The closed object refuses calls on the Kotlin side; nothing reaches Rust.
    expectThrows<IllegalStateException> { vera.client.ownDevice() }
}

suspend fun theLibrarysThreadsStayAttachedToTheJvmBetweenCalls() {
    // bindings/uniffi-bindgen adds a JNA callback-thread initializer to the generated
    // Kotlin: the thread that wakes a suspended call stays attached (under this name)
    // instead of JNA attaching and detaching it at every call.
    val wendy = register(uniqueName("wendy"))
    repeat(3) { wendy.client.devices(wendy.userId) }
    val attached = Thread.getAllStackTraces().keys.filter { it.name == "courier-callback" }
    assertTrue(attached.isNotEmpty(), "no library thread stayed attached after its callbacks")
    assertTrue(attached.all { it.isDaemon }, "an attached library thread would keep the JVM alive")
    wendy.client.close()
}

suspend fun deletingTheAccountNeedsThePasswordAndRetiresEveryDeviceOfIt() {
    val nora = uniqueName("nora")
    // The test server takes accounts openly: the registration token goes through as null.
    val path = scratch.resolve("$nora-n1.db").toString()
    val key = newStoreKey()
    val n1 = Device(CourierClient.register(serverUrl, path, key, nora, PASSWORD, "n1", null), path, key)
    val n2 = login(nora, "n2")

    val wrong = expectThrows<CourierException.WrongPassword> { n1.client.deleteAccount("not the password") }
    assertEquals("wrong_password", wrong.code())
    assertEquals("wrong_password", wrong.serverCode())
    assertEquals(403.toUShort(), wrong.status())
    assertFalse(wrong.isRetryable())
    // Nothing changed: both devices still work.
    n1.client.privacySettings()
    n2.client.privacySettings()

    n1.client.deleteAccount(PASSWORD)
    val deleted = expectThrows<CourierException.AccountDeleted> { n1.client.privacySettings() }
    assertEquals("account_deleted", deleted.code())
    expectThrows<CourierException.AccountDeleted> { CourierClient.open(path, key) }
    expectThrows<CourierException.DeviceRemoved> { n2.client.privacySettings() }
    expectThrows<CourierException.InvalidCredentials> { login(nora, "n3") }
    expectThrows<CourierException.UsernameTaken> { register(nora, "n4") }
    listOf(n1, n2).forEach { it.client.close() }
}

fun main() {
    val tests: List<Pair<String, suspend () -> Unit>> = listOf(
        "two users with two devices exchange direct and group messages" to ::twoUsersWithTwoDevicesExchangeDirectAndGroupMessages,
        "a fourth device gets the device limit with its counts" to ::aFourthDeviceGetsTheDeviceLimitWithItsCounts,
        "a cancelled receive loop stops" to ::aCancelledReceiveLoopStops,
        "a wrong store key is a typed error and leaves the store as it was" to ::aWrongStoreKeyIsATypedErrorAndLeavesTheStoreAsItWas,
        "a store from a newer version is a typed error" to ::aStoreFromANewerVersionIsATypedError,
        "a send while the server is unreachable is retried under its client message id and arrives once" to
            ::aSendWhileTheServerIsUnreachableIsRetriedUnderItsClientMessageIdAndArrivesOnce,
        "calls after log-out and after removal from another device are typed errors" to
            ::callsAfterLogOutAndAfterRemovalFromAnotherDeviceAreTypedErrors,
        "a listener that throws is reported and its events come again" to ::aListenerThatThrowsIsReportedAndItsEventsComeAgain,
        "closing the client while its loop runs stops the loop" to ::closingTheClientWhileItsLoopRunsStopsTheLoop,
        "the library's threads stay attached to the JVM between calls" to ::theLibrarysThreadsStayAttachedToTheJvmBetweenCalls,
        "deleting the account needs the password and retires every device of it" to
            ::deletingTheAccountNeedsThePasswordAndRetiresEveryDeviceOfIt,
    )
    val only = System.getenv("COURIER_TEST_FILTER")
    var passed = 0
    var failed = 0
    for ((name, test) in tests) {
        if (only != null && !name.contains(only)) continue
        val started = System.nanoTime()
        try {
            runBlocking { test() }
            passed++
            println("PASS $name (${(System.nanoTime() - started) / 1_000_000} ms)")
        } catch (failure: Throwable) {
            failed++
            println("FAIL $name: $failure")
            failure.printStackTrace(System.out)
        }
    }
    scratch.toFile().deleteRecursively()
    println("kotlin: $passed passed, $failed failed")
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}
