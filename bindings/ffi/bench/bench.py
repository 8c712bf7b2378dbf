"""The Python side of scripts/bench-bindings.sh (see bindings/ffi/examples/bench.rs for
what `bench prepare` set up): group sends to 9 devices, and events/s through the
listener. Prints RESULT lines. Usage: bench.py DIR (courier_ffi importable)."""

import asyncio
import os
import statistics
import sys
import threading
import time

import courier_ffi as courier

SENDS = 50


class Counter(courier.EventListener):
    def __init__(self, target):
        self.target = target
        self.count = 0
        self.finished_at = None
        self.done = threading.Event()

    def on_events(self, events):
        self.count += sum(1 for e in events if isinstance(e.kind, courier.AppEventKind.MESSAGE))
        if self.count >= self.target and self.finished_at is None:
            self.finished_at = time.perf_counter()
            self.done.set()

    def on_connection_state(self, state):
        pass

    def on_error(self, error):
        print(f"bench: the loop reported {error}", file=sys.stderr)


async def main(directory):
    with open(os.path.join(directory, "bench.env")) as file:
        env = dict(line.rstrip("\n").split("=", 1) for line in file if "=" in line)

    async def open_device(name):
        return await courier.CourierClient.open(env[f"{name}.path"], bytes.fromhex(env[f"{name}.key"]))

    part = os.environ["BENCH_PART"]
    if part == "events":
        await events(env, open_device)
        return
    if part != "send9":
        sys.exit(f"bench: BENCH_PART must be send9 or events, not {part!r}")
    sender = await open_device("send-python")
    channel = env["channel.python"]
    for _ in range(int(os.environ["BENCH_WARMUP"])):
        await sender.send_group(channel, b"warm-up python", None)
    # Then one round of SENDS sends per line on stdin (bindings/ffi/bench/rounds.py).
    print("READY", flush=True)
    round_ = 0
    while await asyncio.to_thread(sys.stdin.readline):
        times = []
        for _ in range(SENDS):
            started = time.perf_counter()
            await sender.send_group(channel, f"python {round_}".encode(), None)
            times.append((time.perf_counter() - started) * 1000)
        round_ += 1
        print(f"RESULT python send9_mean_ms {statistics.mean(times):.2f}")
        print(f"RESULT python send9_p50_ms {statistics.median(times):.2f}")
        print("DONE", flush=True)
    del sender


async def events(env, open_device):
    messages = int(env["messages"])
    for mode in ("cold", "queued"):
        client = await open_device(f"{mode}-python")
        counter = Counter(messages)
        started = time.perf_counter()
        handle = client.start_receiving(counter)
        if not await asyncio.to_thread(counter.done.wait, 600):
            sys.exit(f"bench: gave up waiting for {messages} events")
        handle.cancel()
        await handle.wait()
        del client
        print(f"RESULT python events_{mode}_per_s {messages / (counter.finished_at - started):.0f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
