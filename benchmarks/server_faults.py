"""Server fault soak: the simulator cycles through 5xx, 429 with Retry-After, timeouts,
dropped connections, a wrong token, an unknown gate and down periods while taps arrive.

    .venv/bin/python benchmarks/server_faults.py [--taps 300] [--seed 1]

At the end every tap must be delivered or rejected with the right reason (unknown cards
`unknown-card`), nothing pending after the server recovers, and the log short: the
daemon summarises a repeating problem instead of logging every retry.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from harness import TOKEN, Daemon, machine, write_config

from gateagent.simulator import Simulator

KNOWN = [f"{n:010d}" for n in range(1, 51)]
UNKNOWN = [f"{n:010d}" for n in range(900, 905)]


def faults(sim: Simulator, rng: random.Random, stop: threading.Event) -> list[str]:
    """Play one fault after another until `stop`; the names, in order."""
    played: list[str] = []
    while not stop.wait(rng.uniform(0.5, 1.5)):
        fault = rng.choice(["5xx", "429", "timeout", "drop", "token", "gate", "down", "ok"])
        played.append(fault)
        if fault == "5xx":
            sim.fail_next(rng.randint(1, 5), rng.choice([500, 502, 503]))
        elif fault == "429":
            sim.fail_next(rng.randint(1, 3), 429, retry_after="1")
        elif fault == "timeout":
            sim.stall_next(rng.randint(1, 3), 3.0)
        elif fault == "drop":
            sim.drop_next(rng.randint(1, 3))
        elif fault == "token":
            sim.token = "rotated-on-the-server"
            stop.wait(rng.uniform(1, 3))
            sim.token = TOKEN
        elif fault == "gate":
            sim.gates = {99}
            stop.wait(rng.uniform(1, 3))
            sim.gates = {4}
        elif fault == "down":
            sim.down()
            stop.wait(rng.uniform(1, 4))
            sim.up()
    return played


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    roster = {card: f"Student {card}" for card in KNOWN}
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=roster, latency_s=0.01) as sim,
    ):
        folder = Path(name)
        daemon = Daemon(write_config(folder, sim.integration_url, timeout="1s"))
        daemon.wait("gateagent started", timeout_s=60)
        stop = threading.Event()
        played: list[str] = []
        player = threading.Thread(target=lambda: played.extend(faults(sim, rng, stop)))
        player.start()
        for _ in range(args.taps):
            card = rng.choice(UNKNOWN) if rng.random() < 0.05 else rng.choice(KNOWN)
            daemon.type(card + "\n")
            time.sleep(rng.uniform(0, 0.05))
        stop.set()
        player.join()
        sim.token, sim.gates = TOKEN, {4}
        daemon.wait("tap recorded", args.taps, timeout_s=60)
        settled_by = time.monotonic() + 600
        conn = sqlite3.connect(folder / "taps.db")
        while time.monotonic() < settled_by:
            left = conn.execute("SELECT count(*) FROM taps WHERE state = 'pending'").fetchone()[0]
            if left == 0:
                break
            time.sleep(0.5)  # the daemon's retries are paced by its backoff
        rows = conn.execute("SELECT card_no, state, reason FROM taps").fetchall()
        conn.close()
        daemon.stop()
        log_lines = daemon.log_lines
        kept = Path("server_faults.log")
        kept.write_bytes((folder / "daemon.log").read_bytes())

    wrong = [
        row for row in rows
        if (row[0] in UNKNOWN) != (row[1:] == ("rejected", "unknown-card"))
        or (row[0] in KNOWN and row[1] != "delivered")
    ]  # fmt: skip
    print(f"machine: {machine()}")
    print(f"{args.taps} taps, {len(played)} faults played: {', '.join(played)}")
    states = {
        state: sum(row[1] == state for row in rows)
        for state in ("delivered", "rejected", "pending")
    }
    print(f"taps {len(rows)}: {states}; wrong outcome {len(wrong)}")
    print(
        f"requests {len(sim.received)}, log lines {log_lines} (taps alone account for {2 * len(rows)})"
    )
    print("RESULT", "PASS" if not wrong and len(rows) == args.taps else "FAIL")


if __name__ == "__main__":
    main()
