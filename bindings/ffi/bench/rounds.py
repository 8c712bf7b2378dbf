"""Runs the 9-device send of scripts/bench-bindings.sh in interleaved rounds.

The three programs (Rust, Kotlin, Python) start one after another and warm up alone;
then all stay open, and each round asks each of them, one at a time in a rotated
order, for one block of sends. Whatever drifts during the run (the database growing,
autovacuum, the machine) reaches all three alike, and no language always goes first.

Usage: rounds.py ROUNDS RESULTS -- NAME=COMMAND... (each COMMAND run by bash, which
sees the caller's exported functions). Appends "RESULT ROUND LANGUAGE METRIC VALUE"
lines to RESULTS and echoes them.
"""

import subprocess
import sys


def read_until(process, name, marker):
    lines = []
    while True:
        line = process.stdout.readline()
        if not line:
            sys.exit(f"rounds: {name} ended before {marker} (exit {process.wait()})")
        line = line.strip()
        if line == marker:
            return lines
        lines.append(line)


def main():
    rounds, results = int(sys.argv[1]), sys.argv[2]
    separator = sys.argv.index("--")
    programs = [argument.split("=", 1) for argument in sys.argv[separator + 1 :]]
    processes = {}
    for name, command in programs:
        process = subprocess.Popen(command, shell=True, executable="/bin/bash", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        read_until(process, name, "READY")
        processes[name] = process
    names = [name for name, _ in programs]
    with open(results, "a") as output:
        for round_ in range(rounds):
            for i in range(len(names)):
                name = names[(round_ + i) % len(names)]
                process = processes[name]
                process.stdin.write("go\n")
                process.stdin.flush()
                for line in read_until(process, name, "DONE"):
                    if line.startswith("RESULT "):
                        tagged = f"RESULT {round_} {line[len('RESULT '):]}"
                        print(tagged, flush=True)
                        output.write(tagged + "\n")
    for name, process in processes.items():
        process.stdin.close()
        if process.wait() != 0:
            sys.exit(f"rounds: {name} failed (exit {process.returncode})")


if __name__ == "__main__":
    main()
