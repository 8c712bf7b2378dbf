// Helpers of the Kotlin binding tests: accounts on the test server, a listener that
// records what the receive loop hands it, and a TCP proxy that takes the server away.

import dev.courier.AppEvent
import dev.courier.AppEventKind
import dev.courier.ConnectionState
import dev.courier.CourierClient
import dev.courier.CourierException
import dev.courier.EventListener
import java.io.IOException
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.net.URI
import java.nio.file.Files
import java.nio.file.Path
import java.security.MessageDigest
import java.security.SecureRandom
import java.util.Collections
import java.util.concurrent.TimeUnit
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.thread
import kotlin.concurrent.withLock

/** How long a wait may take before the test gives up: a guard against a hang, not a timing check. */
const val GUARD_MILLIS = 120_000L

const val PASSWORD = "correct horse battery staple"

val serverUrl: String = System.getenv("COURIER_TEST_SERVER")
    ?: throw IllegalStateException("COURIER_TEST_SERVER is not set: run under scripts/with-test-server.sh")

val scratch: Path = Files.createTempDirectory("courier-kotlin-")

private val runTag = java.lang.Long.toString(System.nanoTime() % 2_000_000_000L, 36)
private var nameCounter = 0

/** A username of its own for each account of this run (3 to 32 characters, a letter first). */
fun uniqueName(prefix: String): String = "$prefix-$runTag-${nameCounter++}"

fun newStoreKey(): ByteArray = ByteArray(32).also { SecureRandom().nextBytes(it) }

fun sha256(path: String): String =
    MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(Path.of(path)))
        .joinToString("") { "%02x".format(it) }

/** One logged-in device: its client, where its store is and the key that opens it. */
class Device(val client: CourierClient, val path: String, val key: ByteArray) {
    val listener = Recorder()
    val userId: String get() = client.ownDevice().userId
}

suspend fun register(username: String, device: String = "phone", url: String = serverUrl): Device {
    val path = scratch.resolve("$username-$device.db").toString()
    val key = newStoreKey()
    return Device(CourierClient.register(url, path, key, username, PASSWORD, device), path, key)
}

suspend fun login(username: String, device: String, url: String = serverUrl): Device {
    val path = scratch.resolve("$username-$device.db").toString()
    val key = newStoreKey()
    return Device(CourierClient.login(url, path, key, username, PASSWORD, device), path, key)
}

/** Runs `block`, which must throw a `T`; returns it. */
suspend inline fun <reified T : Throwable> expectThrows(block: suspend () -> Unit): T {
    try {
        block()
    } catch (thrown: Throwable) {
        if (thrown is T) return thrown
        throw AssertionError("expected ${T::class.simpleName}, got $thrown", thrown)
    }
    throw AssertionError("expected ${T::class.simpleName}, nothing was thrown")
}

/**
 * An [EventListener] that records every call. It refuses (throws on) its first
 * [refuseFirst] batches, as an app whose database failed would.
 */
class Recorder(private val refuseFirst: Int = 0) : EventListener {
    private val lock = ReentrantLock()
    private val changed = lock.newCondition()

    /** Every batch handed over, refused or not. */
    val batches = mutableListOf<List<AppEvent>>()
    /** Events of accepted batches. */
    val events = mutableListOf<AppEvent>()
    val states = mutableListOf<ConnectionState>()
    val errors = mutableListOf<CourierException>()
    private var refused = 0

    override fun onEvents(events: List<AppEvent>) {
        lock.withLock {
            batches.add(events)
            changed.signalAll()
            if (refused < refuseFirst) {
                refused++
                throw IllegalStateException("the app's database is full")
            }
            this.events.addAll(events)
        }
    }

    override fun onConnectionState(state: ConnectionState) {
        lock.withLock {
            states.add(state)
            changed.signalAll()
        }
    }

    override fun onError(error: CourierException) {
        lock.withLock {
            errors.add(error)
            changed.signalAll()
        }
    }

    /** Waits until [probe] answers non-null (under the recorder's lock) and returns that. */
    fun <T : Any> await(what: String, probe: Recorder.() -> T?): T = lock.withLock {
        val deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(GUARD_MILLIS)
        while (true) {
            probe()?.let { return it }
            val left = deadline - System.nanoTime()
            if (left <= 0) {
                throw AssertionError("gave up waiting for $what; states=$states errors=$errors events=${events.size}")
            }
            changed.awaitNanos(left)
        }
        @Suppress("UNREACHABLE_CODE")
        throw IllegalStateException()
    }

    fun <T : Any> snapshot(read: Recorder.() -> T): T = lock.withLock { read() }

    fun awaitConnected() = await("the stream to connect") { states.firstOrNull { it is ConnectionState.Connected } }

    fun awaitStopped() = await("the loop to stop") { states.lastOrNull()?.takeIf { it is ConnectionState.Stopped } }

    fun awaitMessage(messageId: String): AppEventKind.Message = await("message $messageId") {
        events.firstNotNullOfOrNull { (it.kind as? AppEventKind.Message)?.takeIf { m -> m.messageId == messageId } }
    }

    fun awaitGroupMessage(messageId: String): AppEventKind.GroupMessage = await("group message $messageId") {
        events.firstNotNullOfOrNull { (it.kind as? AppEventKind.GroupMessage)?.takeIf { m -> m.messageId == messageId } }
    }
}

/**
 * A TCP proxy in front of the test server. `down()` closes its port and every
 * connection (the server is unreachable); `dropResponses()` passes requests on but cuts
 * each connection when the server answers (the server acted, the client never hears);
 * `up()` forwards again, on the same port.
 */
class FaultProxy(upstream: String) : AutoCloseable {
    private val upstreamHost: String
    private val upstreamPort: Int
    private val live: MutableSet<Socket> = Collections.synchronizedSet(mutableSetOf())
    @Volatile private var dropping = false
    private var listener: ServerSocket
    val port: Int

    init {
        val uri = URI(upstream)
        upstreamHost = uri.host
        upstreamPort = uri.port
        listener = bind(0)
        port = listener.localPort
        accept(listener)
    }

    val url: String get() = "http://127.0.0.1:$port"

    private fun bind(port: Int) = ServerSocket().apply {
        reuseAddress = true
        bind(InetSocketAddress("127.0.0.1", port))
    }

    private fun accept(socket: ServerSocket) = thread(isDaemon = true, name = "proxy-accept") {
        while (true) {
            val client = try { socket.accept() } catch (_: IOException) { return@thread }
            val server = try { Socket(upstreamHost, upstreamPort) } catch (_: IOException) { client.close(); continue }
            live.add(client)
            live.add(server)
            pump(client, server, cutOnData = false)
            pump(server, client, cutOnData = dropping)
        }
    }

    private fun pump(from: Socket, to: Socket, cutOnData: Boolean) = thread(isDaemon = true, name = "proxy-pump") {
        val buffer = ByteArray(64 * 1024)
        try {
            while (true) {
                val n = from.getInputStream().read(buffer)
                if (n < 0 || cutOnData) break
                to.getOutputStream().write(buffer, 0, n)
                to.getOutputStream().flush()
            }
        } catch (_: IOException) {
        } finally {
            closeQuietly(from)
            closeQuietly(to)
        }
    }

    private fun closeQuietly(socket: Socket) {
        try { socket.close() } catch (_: IOException) {}
        live.remove(socket)
    }

    private fun cutAll() {
        val sockets = synchronized(live) { live.toList() }
        sockets.forEach { closeQuietly(it) }
    }

    @Synchronized fun down() {
        listener.close()
        cutAll()
    }

    @Synchronized fun up() {
        dropping = false
        cutAll()
        if (listener.isClosed) {
            listener = bind(port)
            accept(listener)
        }
    }

    @Synchronized fun dropResponses() {
        up()
        dropping = true
    }

    override fun close() = down()
}
