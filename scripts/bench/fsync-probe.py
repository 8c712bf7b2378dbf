#!/usr/bin/env python3
"""How long the disk under PostgreSQL takes to flush: writes 8 KiB and fdatasyncs it every
5 ms for a while, then prints the latency percentiles. Run it alone, then beside a load
run: if the flushes stall only under load, commits (which wait for the WAL flush) stall
with them.

    scripts/bench/fsync-probe.py [SECONDS] [FILE]    # default 20 s, next to PostgreSQL's data
"""
import os
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
path = sys.argv[2] if len(sys.argv) > 2 else "/var/lib/postgresql/courier-fsync-probe"
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
block = b"x" * 8192
latencies = []
end = time.time() + seconds
try:
    while time.time() < end:
        os.pwrite(fd, block, (len(latencies) % 1024) * 8192)
        started = time.perf_counter()
        os.fdatasync(fd)
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.005)
finally:
    os.close(fd)
    os.unlink(path)
latencies.sort()
n = len(latencies)
print(
    f"flushes {n}: p50 {latencies[n // 2]:.2f} ms, p99 {latencies[int(n * 0.99)]:.2f} ms, "
    f"p99.9 {latencies[int(n * 0.999)]:.2f} ms, max {latencies[-1]:.1f} ms, "
    f"over 50 ms {sum(1 for x in latencies if x > 50)}"
)
