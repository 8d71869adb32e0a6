"""Draining a backlog: pending taps delivered against the simulator with added latency.

    .venv/bin/python benchmarks/drain.py [--taps 10000] [--latency-ms 20] [--concurrency 4]

The ideal rate is concurrency / latency (200 taps/s for 4 and 20 ms): what a client
that spent no time of its own would reach. Prints the rate, its ratio to the ideal,
the daemon's RSS idle and during the drain, and checks that taps of each card arrived
in the order they happened.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from harness import TOKEN, Daemon, machine, sample, write_config

from gateagent.simulator import Simulator
from gateagent.store import NewTap, Store

CARDS = 2000


def backlog(path: Path, taps: int) -> None:
    """`taps` pending taps over a week, CARDS cards: written fast, durability is not measured."""
    store = Store.open(path)
    store._conn.execute("PRAGMA synchronous = OFF")
    start = datetime.now(UTC) - timedelta(days=7)
    step = timedelta(days=7) / taps
    rng = random.Random(7)
    tz = ZoneInfo("Asia/Jakarta")
    for n in range(taps):
        store.record(
            NewTap(
                tap_id=str(uuid.uuid4()),
                card_no=f"{rng.randrange(CARDS) + 1:010d}",
                reader="desk",
                gate=None,
                direction="auto",
                tapped_at=start + n * step,
                at_mono=float(n),
                boot_id="bench",
                clock_synced=True,
            ),
            tz,
            0.0,
            hold=False,
        )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, CARDS + 1)}
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=roster, latency_s=args.latency_ms / 1000) as sim,
    ):
        folder = Path(name)
        backlog(folder / "taps.db", args.taps)
        sim.down()  # measure idle RSS first, with the backlog waiting
        daemon = Daemon(
            write_config(
                folder, sim.integration_url, concurrency=args.concurrency, flush_interval="30s"
            )
        )
        daemon.wait("gateagent started", timeout_s=60)
        time.sleep(2)
        idle_rss = daemon.rss_mb()
        stop = threading.Event()
        rss = sample(0.5, daemon.rss_mb, stop)
        sim.up()
        started = time.monotonic()
        accepted = sim.wait_for_accepted(args.taps, timeout_s=3600)
        elapsed = accepted[-1].at_mono - started
        stop.set()
        daemon.stop()

    rate = args.taps / elapsed
    ideal = args.concurrency / (args.latency_ms / 1000)
    order_ok = True
    seen: dict[str, str] = {}
    for received in accepted:
        card, at = str(received.body["card_no"]), str(received.body["tanggal"])
        if at < seen.get(card, ""):
            order_ok = False
        seen[card] = at
    print(f"machine: {machine()}")
    print(
        f"backlog: {args.taps} taps of {CARDS} cards, latency {args.latency_ms:g} ms, concurrency {args.concurrency}"
    )
    print(
        f"drained in {elapsed:.1f} s: {rate:.1f} taps/s, ideal {ideal:.0f}: ratio {rate / ideal:.2f} (target >= 0.9)"
    )
    print(
        f"RSS idle {idle_rss:.1f} MB, during drain max {max(rss, default=0):.1f} MB "
        f"({max(rss, default=0) / idle_rss:.2f} x idle, target <= 1.2)"
    )
    print(
        f"per-card order kept: {order_ok}; requests {len(sim.received)}, accepted {len(accepted)}"
    )


if __name__ == "__main__":
    main()
