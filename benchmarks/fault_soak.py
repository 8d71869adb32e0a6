"""Fault soak (issue 11): store faults at random moments while taps arrive, reloads while
the database is locked, a disk full at start and mid-run, SIGTERM while requests hang.

Each cycle starts `gateagent run` (sometimes on a disk already full), types taps at
random moments and, meanwhile, at random: another process holds `BEGIN IMMEDIATE` for a
random spell, the disk (a 12 MiB tmpfs) is filled and freed, SIGHUP swaps a reader's
settings (often while the database is locked), the simulator hangs requests. Then the
faults end, a probe tap must be recorded (else a reader was left stopped), and SIGTERM
must exit 0 (else systemd would restart it: a restart loop). A last run delivers it all.

    .venv/bin/python benchmarks/fault_soak.py --seconds 180

It stops by itself after `--seconds` (plus the cycle in progress and the final
delivery). The tmpfs needs root; without it the disk faults are left out (said so).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

from harness import TOKEN, Daemon, machine

from gateagent.simulator import Simulator


def config(folder: Path, db: Path, url: str, variant: int) -> Path:
    # The serial reader `door` is never plugged in; its path changes with each reload,
    # so every SIGHUP stops and restarts one reader.
    lines = [
        "[device]",
        'name = "soak"',
        "require_clock_sync = false",
        "[storage]",
        f'path = "{db}"',
        "[taps]",
        'debounce = "0s"',
        'min_checkout_after = "0s"',
        "[[readers]]",
        'name = "desk"',
        'kind = "stdin"',
        "[[readers]]",
        'name = "door"',
        'kind = "serial"',
        f'path = "{folder / f"ttyUSB-{variant}"}"',
        "[uplink]",
        f'url = "{url}"',
        f'token = "{TOKEN}"',
        "gate = 4",
        'flush_interval = "0s"',
        'timeout = "3s"',
    ]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Disk:
    """A small tmpfs for the database, to fill and free for real.

    Larger than SQLite's WAL grows before its first checkpoint (1000 pages, 4 MiB): on a
    4 MiB disk the WAL itself, not the filler, came to fill it, and freeing the filler
    freed nothing (at a gate a disk is full by something else, and freeing it is the
    technician's fix)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.filler = folder / "filler"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        self.ok = done.returncode == 0

    def fill(self) -> None:
        try:
            with self.filler.open("ab") as file:
                while True:
                    file.write(b"\0" * 65536)
                    file.flush()
        except OSError:
            pass  # full (also when the filler could not even be created: full already)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.ok:
            subprocess.run(["umount", str(self.folder)], check=False)


def hold_lock(db: Path, seconds: float, done: threading.Event) -> None:
    """Another process's writer (a requeue, a sqlite3 shell) holding the write lock."""
    try:
        with closing(sqlite3.connect(db, timeout=30, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            time.sleep(seconds)
            conn.execute("COMMIT")
    except sqlite3.Error:
        pass  # the disk may be full or the file not there yet: no lock this time
    finally:
        done.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="gateagent-fault-soak-"))
    disk_folder = folder / "disk"
    disk_folder.mkdir()
    disk = Disk(disk_folder) if os.geteuid() == 0 else None
    db = (disk_folder if disk and disk.ok else folder) / "taps.db"
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, 100_000)}
    figures: Counter[str] = Counter()
    typed: list[str] = []
    recorded: list[str] = []
    next_card = 1
    deadline = time.monotonic() + args.seconds
    daemon: Daemon | None = None
    started = time.monotonic()

    def card() -> str:
        nonlocal next_card
        next_card += 1
        typed.append(f"{next_card:010d}")
        return typed[-1]

    try:
        with Simulator(token=TOKEN, roster=roster) as sim:
            sim.latency_s = 0.005
            variant = 0
            while time.monotonic() < deadline:
                figures["cycles"] += 1
                path = config(folder, db, sim.integration_url, variant)
                full_at_start = disk is not None and disk.ok and rng.random() < 0.25
                if full_at_start:
                    figures["disk full at start"] += 1
                    disk.fill()  # type: ignore[union-attr]
                daemon = Daemon(path)
                daemon.wait("gateagent started", timeout_s=30)
                locks: list[threading.Event] = []
                if full_at_start:
                    threading.Timer(rng.uniform(0.5, 3), disk.free).start()  # type: ignore[union-attr]
                cycle_end = time.monotonic() + rng.uniform(4, 9)
                hang = rng.random() < 0.3
                while time.monotonic() < cycle_end:
                    daemon.type(card() + "\n")
                    roll = rng.random()
                    if roll < 0.08:
                        done = threading.Event()
                        locks.append(done)
                        figures["locks"] += 1
                        spell = rng.uniform(0.5, 12)  # beyond the 10 s busy timeout too
                        threading.Thread(target=hold_lock, args=(db, spell, done)).start()
                        if rng.random() < 0.6:
                            time.sleep(0.05)
                            variant += 1
                            config(folder, db, sim.integration_url, variant)
                            daemon.process.send_signal(signal.SIGHUP)
                            figures["reloads while locked"] += 1
                    elif roll < 0.12:
                        variant += 1
                        config(folder, db, sim.integration_url, variant)
                        daemon.process.send_signal(signal.SIGHUP)
                        figures["reloads"] += 1
                    elif roll < 0.15 and disk is not None and disk.ok:
                        figures["disk full mid-run"] += 1
                        disk.fill()
                        threading.Timer(rng.uniform(0.2, 3), disk.free).start()
                    if daemon.process.poll() is not None:
                        figures["exited by itself"] += 1
                        break
                    time.sleep(rng.uniform(0.02, 0.4))
                # The faults end (except a hang): a probe tap must be recorded.
                for done in locks:
                    done.wait(30)
                if disk is not None:
                    disk.free()
                probe = card()
                daemon.type(probe + "\n")
                try:
                    daemon.wait_recorded([probe], timeout_s=40)
                except TimeoutError:
                    figures["readers left stopped"] += 1
                if hang:
                    figures["stops while requests hang"] += 1
                    sim.stall_next(4, 30.0)
                    daemon.type(card() + "\n" + card() + "\n")
                    time.sleep(0.3)
                at = time.monotonic()
                code = daemon.stop()
                figures["stop s (max)"] = max(figures["stop s (max)"], round(time.monotonic() - at))
                if code != 0:
                    figures["exits not 0 (restart loops)"] += 1
                recorded += daemon.recorded_cards
                conn = sqlite3.connect(db)
                in_db = Counter(row[0] for row in conn.execute("SELECT card_no FROM taps"))
                conn.close()
                figures["recorded taps lost"] = sum((Counter(recorded) - in_db).values())

            final = daemon = Daemon(config(folder, db, sim.integration_url, variant))
            final.wait("gateagent started", timeout_s=30)
            conn = sqlite3.connect(db)
            try:
                conn.execute("PRAGMA busy_timeout = 30000")
                # Not forever: a gate that cannot deliver is the soak's finding, not a hang.
                until = time.monotonic() + 120
                while conn.execute("SELECT n FROM tap_counts WHERE state = 'pending'").fetchone()[
                    0
                ]:
                    if time.monotonic() > until:
                        figures["not delivered at the end"] += 1
                        break
                    time.sleep(0.5)
                states = Counter(row[0] for row in conn.execute("SELECT state FROM taps"))
                in_db = {row[0] for row in conn.execute("SELECT card_no FROM taps")}
            finally:
                conn.close()
            final.stop()
            accepted = [str(r.body["card_no"]) for r in sim.accepted()]
    finally:
        if daemon is not None and daemon.process.poll() is None:
            daemon.process.kill()  # the soak itself failed: leave nothing running
            daemon.process.wait(10)
        if disk is not None:
            disk.free()
            disk.close()

    print(f"fault soak: {machine()}, {time.monotonic() - started:.0f} s, seed {args.seed}")
    if disk is None or not disk.ok:
        print("  (no tmpfs: disk faults left out; run as root for them)")
    for key in (
        "cycles",
        "disk full at start",
        "disk full mid-run",
        "locks",
        "reloads",
        "reloads while locked",
        "stops while requests hang",
    ):
        print(f"  {key:<28} {figures[key]}")
    print(f"  {'taps typed':<28} {len(typed)}")
    print(f"  {'logged as recorded':<28} {len(recorded)}")
    print(f"  {'typed, not in the database':<28} {len(set(typed) - in_db)}")
    print(f"  {'recorded taps lost':<28} {figures['recorded taps lost']}")
    print(f"  {'readers left stopped':<28} {figures['readers left stopped']}")
    print(f"  {'exits not 0 (restart loops)':<28} {figures['exits not 0 (restart loops)']}")
    print(f"  {'exited by itself':<28} {figures['exited by itself']}")
    print(f"  {'slowest stop (s)':<28} {figures['stop s (max)']}")
    print(f"  {'not delivered at the end':<28} {figures['not delivered at the end']}")
    print(f"  {'states at the end':<28} {dict(states)}")
    print(
        f"  {'delivered, duplicates':<28} {len(set(accepted))}, {len(accepted) - len(set(accepted))}"
    )
    bad = (
        figures["recorded taps lost"]
        + figures["readers left stopped"]
        + figures["exits not 0 (restart loops)"]
        + figures["exited by itself"]
        + figures["not delivered at the end"]
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
