"""Taps recorded per second through the real `run` path, beside a bare sqlite3 loop.

    .venv/bin/python benchmarks/ingest.py [--taps 4000] [--rounds 5]

The path: stdin reader -> decode -> normalize -> debounce -> direction (a query of the
card's earlier taps) -> one INSERT and one commit (WAL, synchronous=FULL) -> log line.
The bare loop does one INSERT per commit with WAL and FULL on the same disk; the disk's
fsync rate bounds both. A second bare loop runs gateagent's own statements on its own
schema (the direction query, the INSERT into the indexed table, the counts trigger)
with no Python work around them: what SQLite alone costs for a tap, so the gap between
it and `run` is the Python in the tap path. The uploader is idle (flush_interval 1h).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from harness import Daemon, machine, write_config

from gateagent.store import Store


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


def same_sql(folder: Path, taps: int) -> float:
    path = folder / "same.db"
    Store.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    at = "2026-11-24T00:00:00.000Z"
    started = time.perf_counter()
    for n in range(taps):
        card_no = f"{n % 500 + 1:010d}"
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "SELECT min(tapped_at) FROM taps WHERE card_no = ? AND checktype = 1"
            " AND tapped_at >= ? AND tapped_at <= ?",
            (card_no, at, at),
        ).fetchone()
        conn.execute(
            "INSERT INTO taps (tap_id, card_no, reader, gate, direction, checktype, state,"
            " reason, tapped_at, at_mono, boot_id, clock_synced, recorded_at, settled_at)"
            " VALUES (?, ?, 'desk', NULL, 'auto', ?, 'pending', NULL, ?, ?, 'b', 1, ?, NULL)",
            (str(uuid.uuid4()), card_no, 1 if n < 500 else 2, at, float(n), at),
        )
        conn.execute("COMMIT")
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
    parser.add_argument("--taps", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5, help="the three, side by side, N times")
    args = parser.parse_args()
    ratios: list[float] = []
    print(f"machine: {machine()}")
    print("   bare  same SQL       run   ratio  (taps/s; ratio = run / bare, target >= 0.8)")
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as name:
            folder = Path(name)
            bare_rate = bare(folder, args.taps)
            same_rate = same_sql(folder, args.taps)
            run_rate = through_run(folder, args.taps)
        ratios.append(run_rate / bare_rate)
        print(f"{bare_rate:7.0f} {same_rate:9.0f} {run_rate:9.0f} {ratios[-1]:7.2f}")
    print(
        f"ratio: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
