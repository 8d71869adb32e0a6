"""Crash soak: `gateagent run` killed with SIGKILL at random moments, again and again,
while taps arrive and uploads are in flight. Nothing recorded may be lost.

    .venv/bin/python benchmarks/crash_soak.py [--cycles 200] [--seed 1]

A tap counts as recorded when the daemon logged `tap recorded` (after its commit).
Afterwards one clean run delivers what is left; then every recorded tap must be in the
database and at the server, taps of each card first arrived in the order they
happened, and duplicates (sent again after a kill) are counted.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness import TOKEN, Daemon, machine, write_config

from gateagent.simulator import Simulator

CARDS = [f"{n:010d}" for n in range(1, 41)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    roster = {card: f"Student {card}" for card in CARDS}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=roster, latency_s=0.005) as sim,
    ):
        folder = Path(name)
        config = write_config(folder, sim.integration_url)
        recorded: Counter[str] = Counter()
        typed = 0
        for _ in range(args.cycles):
            daemon = Daemon(config)
            daemon.wait("gateagent started", timeout_s=60)
            for _ in range(rng.randint(1, 8)):
                daemon.type(CARDS[typed % len(CARDS)] + "\n")
                typed += 1
                time.sleep(rng.uniform(0, 0.01))
            time.sleep(rng.uniform(0, 0.05))
            daemon.process.kill()
            daemon.process.wait(30)
            daemon.stop()
            recorded.update(daemon.recorded_cards)
        final = Daemon(config)
        final.wait("gateagent started", timeout_s=60)
        conn = sqlite3.connect(folder / "taps.db")
        rows = conn.execute("SELECT card_no, tapped_at, state FROM taps ORDER BY seq").fetchall()
        pending = sum(state == "pending" for _, _, state in rows)
        if pending:
            final.wait("tap delivered", pending, timeout_s=600)
        final.stop()
        rows = conn.execute("SELECT card_no, tapped_at, state FROM taps ORDER BY seq").fetchall()
        conn.close()
        accepted = sim.accepted()

    in_db = Counter(card for card, _, _ in rows)
    lost = recorded - in_db
    first: dict[tuple[str, str], int] = {}
    for index, received in enumerate(accepted):
        first.setdefault((str(received.body["card_no"]), str(received.body["tanggal"])), index)
    undelivered = [(card, at) for card, at, _ in rows if (card, at) not in first]
    order_ok = all(
        [first[(c, at)] for c, at, _ in rows if c == card and (c, at) in first]
        == sorted(first[(c, at)] for c, at, _ in rows if c == card and (c, at) in first)
        for card in CARDS
    )
    print(f"machine: {machine()}")
    print(f"{args.cycles} cycles in {time.monotonic() - started:.0f} s, {typed} cards typed")
    print(
        f"recorded (logged) {sum(recorded.values())}, in the database {len(rows)}, lost {sum(lost.values())}"
    )
    print(
        f"delivered {len(first)}, undelivered {len(undelivered)}, duplicates {len(accepted) - len(first)}"
    )
    print(f"per-card order kept: {order_ok}")
    print("RESULT", "PASS" if not lost and not undelivered and order_ok else "FAIL")


if __name__ == "__main__":
    main()
