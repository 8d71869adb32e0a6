"""`status` and `export` on a big database: 1,000,000 taps (a large school, a year).

    .venv/bin/python benchmarks/bigdb.py [--taps 1000000]

Prints the time of `status --json` (the whole command, and the database part alone),
start-up of the daemon to READY=1 on that database (quick_check included), and
`export`: rows per second and its peak RSS, which must not grow with the rows.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import machine, write_config

from gateagent import status
from gateagent.store import Store, iso


def fill(path: Path, taps: int) -> None:
    """Taps written in bulk: their durability is not what is measured here."""
    Store.open(path).close()
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / taps
    conn = __import__("sqlite3").connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    states = ["delivered"] * 97 + ["rejected", "ignored", "pending"]
    rows = (
        (
            str(uuid.UUID(int=n)), f"{n % 5000 + 1:010d}", "entrance", 4, 1 + n % 2,
            states[n % 100], None, iso(start + n * step), float(n), "bench", 1, 1,
            iso(start + n * step), iso(start + n * step) if states[n % 100] != "pending" else None,
        )
        for n in range(taps)
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO taps (tap_id, card_no, reader, gate, checktype, state, reason, tapped_at,"
        " at_mono, boot_id, clock_synced, attempts, recorded_at, settled_at, direction)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'auto')",
        rows,
    )
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as name:
        folder = Path(name)
        config = write_config(folder, "http://127.0.0.1:9/x", flush_interval="1h")
        fill(folder / "taps.db", args.taps)
        size_mb = (folder / "taps.db").stat().st_size / 2**20

        store = Store.open_for_reading(folder / "taps.db")
        began = time.perf_counter()
        facts = status.collect(store, datetime.now(UTC))
        collect_ms = (time.perf_counter() - began) * 1000
        store.close()
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gateagent", "status", "--json", "--config", str(config)],
                       check=True, capture_output=True)  # fmt: skip
        command_ms = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import gateagent.cli"], check=True)
        import_ms = (time.perf_counter() - began) * 1000

        began = time.perf_counter()
        with open(os.devnull, "wb") as sink:
            subprocess.run([sys.executable, "-m", "gateagent", "export", "--config", str(config)],
                           check=True, stdout=sink)  # fmt: skip
        export_s = time.perf_counter() - began
        export_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(folder / "notify"))
        notify.settimeout(120)
        began = time.perf_counter()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gateagent", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "NOTIFY_SOCKET": str(folder / "notify")},
        )  # fmt: skip
        while b"READY=1" not in notify.recv(4096):
            pass
        ready_s = time.perf_counter() - began
        daemon.terminate()
        daemon.wait(60)
        notify.close()
    print(f"machine: {machine()}")
    print(
        f"database: {args.taps} taps, {size_mb:.0f} MB; pending {facts['pending']}, delivered {facts['delivered']}"
    )
    print(
        f"status --json: {command_ms:.0f} ms for the command ({import_ms:.0f} ms of it Python start-up and imports), "
        f"{collect_ms:.1f} ms for the database part (target < 100 ms)"
    )
    print(
        f"export: {args.taps / export_s:.0f} rows/s, peak RSS of the biggest child {export_rss_mb:.0f} MB"
    )
    print(f"run: start to READY=1 {ready_s:.2f} s (quick_check on the whole file)")


if __name__ == "__main__":
    main()
