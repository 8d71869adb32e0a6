"""Taps recorded per second through the real `run` path, beside a bare sqlite3 loop.

    .venv/bin/python benchmarks/ingest.py [--taps 2000]

The path: stdin reader -> decode -> normalize -> debounce -> direction (a query of the
card's earlier taps) -> one INSERT and one commit (WAL, synchronous=FULL) -> log line.
The bare loop does one INSERT per commit with WAL and FULL on the same disk; the disk's
fsync rate bounds both. The uploader is idle (flush_interval 1h) so it measures ingest.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from harness import Daemon, machine, write_config


def bare(folder: Path, taps: int) -> float:
    conn = sqlite3.connect(folder / "bare.db")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE taps (seq INTEGER PRIMARY KEY, card_no TEXT, tapped_at TEXT)")
    conn.commit()
    started = time.perf_counter()
    for n in range(taps):
        conn.execute("INSERT INTO taps (card_no, tapped_at) VALUES (?, ?)", (f"{n:010d}", "x"))
        conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return taps / elapsed


def through_run(folder: Path, taps: int) -> float:
    daemon = Daemon(write_config(folder, "http://127.0.0.1:9/", flush_interval="1h"))
    daemon.wait("gateagent started", timeout_s=60)
    # 500 cards, each tapped several times: direction lookups find earlier taps.
    lines = "".join(f"{n % 500 + 1:010d}\n" for n in range(taps))
    started = time.monotonic()
    daemon.type(lines)
    finished = daemon.wait("tap recorded", taps)
    daemon.stop()
    return taps / (finished - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as name:
        folder = Path(name)
        bare_rate = bare(folder, args.taps)
        run_rate = through_run(folder, args.taps)
    print(f"machine: {machine()}")
    print(f"bare sqlite3 (WAL, FULL, 1 insert/commit): {bare_rate:8.0f} taps/s")
    print(f"gateagent run (stdin -> commit):            {run_rate:8.0f} taps/s")
    print(f"ratio: {run_rate / bare_rate:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
