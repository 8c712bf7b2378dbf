// The Kotlin side of scripts/bench-bindings.sh (see bindings/ffi/examples/bench.rs for
// what `bench prepare` set up): group sends to 9 devices, and events/s through the
// listener. Prints RESULT lines.

import dev.courier.AppEvent
import dev.courier.AppEventKind
import dev.courier.ConnectionState
import dev.courier.CourierClient
import dev.courier.CourierException
import dev.courier.EventListener
import kotlinx.coroutines.runBlocking
import java.io.File
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.system.exitProcess

const val SENDS = 50

fun unhex(text: String): ByteArray = ByteArray(text.length / 2) { text.substring(2 * it, 2 * it + 2).toInt(16).toByte() }

class Counter(private val target: Int) : EventListener {
    private val count = AtomicInteger()
    val done = CountDownLatch(1)
    @Volatile var finishedAt = 0L

    override fun onEvents(events: List<AppEvent>) {
        val messages = events.count { it.kind is AppEventKind.Message }
        if (count.addAndGet(messages) >= target && finishedAt == 0L) {
            finishedAt = System.nanoTime()
            done.countDown()
        }
    }

    override fun onConnectionState(state: ConnectionState) {}

    override fun onError(error: CourierException) {
        System.err.println("bench: the loop reported $error")
    }
}

fun main(args: Array<String>) = runBlocking {
    val env = File(args[0], "bench.env").readLines().filter { '=' in it }
        .associate { it.substringBefore('=') to it.substringAfter('=') }
    suspend fun open(name: String) = CourierClient.open(env.getValue("$name.path"), unhex(env.getValue("$name.key")))
    when (val part = System.getenv("BENCH_PART")) {
        "events" -> { events(env.getValue("messages").toInt()) { open(it) }; return@runBlocking }
        "send9" -> {}
        else -> { System.err.println("bench: BENCH_PART must be send9 or events, not $part"); exitProcess(2) }
    }

    val sender = open("send-kotlin")
    val channel = env.getValue("channel.kotlin")
    // The first send opens the sessions; the rest let the JIT compile the call path (an
    // app's process makes many calls; 50 right after start would measure the interpreter).
    repeat(System.getenv("BENCH_WARMUP").toInt()) { sender.sendGroup(channel, "warm-up kotlin".toByteArray(), null) }
    // Then one round of SENDS sends per line on stdin (bindings/ffi/bench/rounds.py).
    println("READY")
    var round = 0
    while (readLine() != null) {
        val times = DoubleArray(SENDS)
        for (n in 0 until SENDS) {
            val started = System.nanoTime()
            sender.sendGroup(channel, "kotlin $round".toByteArray(), null)
            times[n] = (System.nanoTime() - started) / 1e6
        }
        round++
        times.sort()
        println("RESULT kotlin send9_mean_ms %.2f".format(times.average()))
        println("RESULT kotlin send9_p50_ms %.2f".format(times[SENDS / 2]))
        println("DONE")
    }
    sender.close()
}

suspend fun events(messages: Int, open: suspend (String) -> CourierClient) {
    for (mode in listOf("cold", "queued")) {
        val client = open("$mode-kotlin")
        val counter = Counter(messages)
        val started = System.nanoTime()
        val handle = client.startReceiving(counter)
        if (!counter.done.await(600, TimeUnit.SECONDS)) {
            System.err.println("bench: gave up waiting for $messages events")
            exitProcess(1)
        }
        handle.cancel()
        handle.wait()
        client.close()
        val seconds = (counter.finishedAt - started) / 1e9
        println("RESULT kotlin events_${mode}_per_s %.0f".format(messages / seconds))
    }
}
