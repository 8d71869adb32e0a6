"""Tap to server: how long from a card read to the server receiving it, flush_interval 0s.

    .venv/bin/python benchmarks/latency.py [--taps 300] [--latency-ms 20]

A card number is written to the daemon's stdin (the reader) and the simulator notes
when the request body arrived; both read the system-wide monotonic clock. The figure
covers decode, decisions, the commit (fsync), waking the uploader and the POST; the
simulator's added latency delays only its answer, so it is not in the figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness import TOKEN, Daemon, machine, write_config

from gateagent.simulator import Simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--every-ms", type=float, default=50.0, help="time between taps")
    args = parser.parse_args()
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, args.taps + 1)}
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=roster, latency_s=args.latency_ms / 1000) as sim,
    ):
        daemon = Daemon(write_config(Path(name), sim.integration_url, flush_interval="0s"))
        daemon.wait("gateagent started", timeout_s=60)
        typed: dict[str, float] = {}
        for n in range(1, args.taps + 1):
            card = f"{n:010d}"
            typed[card] = time.monotonic()
            daemon.type(card + "\n")
            time.sleep(args.every_ms / 1000)
        received = sim.wait_for_accepted(args.taps, timeout_s=600)
        daemon.stop()
    delays_ms = sorted((r.at_mono - typed[str(r.body["card_no"])]) * 1000 for r in received)
    p50 = statistics.median(delays_ms)
    p99 = delays_ms[min(len(delays_ms) - 1, round(0.99 * len(delays_ms)))]
    print(f"machine: {machine()}")
    print(
        f"{args.taps} taps, one every {args.every_ms:g} ms, server latency {args.latency_ms:g} ms (not counted)"
    )
    print(
        f"tap to server: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {delays_ms[-1]:.1f} ms (target p99 < 20 ms)"
    )


if __name__ == "__main__":
    main()
