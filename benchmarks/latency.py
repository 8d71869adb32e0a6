"""Tap to server and tap to the recorded signal, flush_interval 0s.

    .venv/bin/python benchmarks/latency.py [--taps 300] [--latency-ms 20] [--backlog 20000]

A card number is written to the daemon's stdin (the reader) and the simulator notes
when the request body arrived; both read the system-wide monotonic clock. The figure
covers decode, decisions, the commit (fsync), waking the uploader and the POST; the
simulator's added latency delays only its answer, so it is not in the figure.

The loaded case does the same while the daemon drains `--backlog` pending taps of other
cards (`benchmarks/drain.py`'s backlog) over the same connections: a gate back online
after an outage, with people still tapping. It says how much of the backlog was still
pending when the last card was typed (the drain must outlast the taps).

Then a second daemon, with `[feedback] command` set to a shell one-liner that writes
the outcome and card to a FIFO this script reads (issue 15): card written -> the
"tap recorded" log line (the commit, seen here through the daemon's stderr), -> the
command hearing `recorded`, and -> it hearing the server's verdict (`accepted` or
`late`). The command is started only after the signal is given, so the spawn of its
shell is in that figure: it is measured alone too (the same command run from here),
and so is a bare commit on the same disk. A buzzer or LED is set by the player thread
at the same moment the command is queued, so the recorded signal on a GPIO is the
"tap recorded" figure plus a thread wake-up, and the command figure is its upper bound.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drain import CARDS, backlog
from harness import TOKEN, Daemon, machine, write_config

from gateagent.simulator import Simulator

HOOK = 'echo "$FEEDBACK_OUTCOME $FEEDBACK_CARD_NO" >> "$1"\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--every-ms", type=float, default=50.0, help="time between taps")
    parser.add_argument(
        "--backlog", type=int, default=20_000, help="pending taps drained beside the loaded case"
    )
    args = parser.parse_args()
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, max(args.taps, CARDS) + 1)}
    roster |= {fresh(n): f"Student {fresh(n)}" for n in range(1, args.taps + 1)}
    print(f"machine: {machine()}")
    print(
        f"{args.taps} taps, one every {args.every_ms:g} ms,"
        f" server latency {args.latency_ms:g} ms (not counted)"
    )
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=roster, latency_s=args.latency_ms / 1000) as sim,
    ):
        folder = Path(name)
        to_server(folder / "server", sim, args)
        to_server_loaded(folder / "loaded", sim, args)
        to_signal(folder / "signal", sim, args)


def fresh(n: int) -> str:
    """The typed cards of the loaded case: none of them has a tap in the backlog."""
    return f"9{n:09d}"


def tap_all(
    daemon: Daemon, taps: int, every_ms: float, card: Callable[[int], str] = "{:010d}".format
) -> dict[str, float]:
    typed: dict[str, float] = {}
    for n in range(1, taps + 1):
        card_no = card(n)
        typed[card_no] = time.monotonic()
        daemon.type(card_no + "\n")
        time.sleep(every_ms / 1000)  # the taps' pace, not a wait for anything
    return typed


def to_server(folder: Path, sim: Simulator, args: argparse.Namespace) -> None:
    folder.mkdir()
    daemon = Daemon(write_config(folder, sim.integration_url, flush_interval="0s"))
    daemon.wait("gateagent started", timeout_s=60)
    # The uploader starts after READY=1 (README "Performance"): the first tap waits for
    # it, once per start; the figure is of the taps after it.
    first = tap_all(daemon, 1, 0.0, lambda n: f"{args.taps + n:010d}")
    (arrived,) = sim.wait_for_accepted(1, timeout_s=60)
    typed = tap_all(daemon, args.taps, args.every_ms)
    received = sim.wait_for_accepted(1 + args.taps, timeout_s=60)[1:]
    daemon.stop()
    delays = [(r.at_mono - typed[str(r.body["card_no"])]) * 1000 for r in received]
    print(f"tap to server:            {figures(delays)} (target p99 < 20 ms)")
    after_start = (arrived.at_mono - first[str(arrived.body["card_no"])]) * 1000
    print(f"  the first tap, typed at 'gateagent started': {after_start:.1f} ms")


def to_server_loaded(folder: Path, sim: Simulator, args: argparse.Namespace) -> None:
    folder.mkdir()
    backlog(folder / "taps.db", args.backlog)
    already = len(sim.accepted())
    daemon = Daemon(write_config(folder, sim.integration_url, flush_interval="0s"))
    daemon.wait("gateagent started", timeout_s=60)
    daemon.wait("tap delivered", 1, timeout_s=60)  # the uploader runs (see to_server)
    typed = tap_all(daemon, args.taps, args.every_ms, fresh)
    drained = sum(1 for r in sim.accepted()[already:] if str(r.body["card_no"]) not in typed)
    received = {
        str(r.body["card_no"]): r
        for r in sim.wait_for_accepted(already + args.backlog + args.taps, timeout_s=3600)[already:]
        if str(r.body["card_no"]) in typed
    }
    daemon.stop()
    delays = [(r.at_mono - typed[card]) * 1000 for card, r in received.items()]
    left = args.backlog - drained
    print(
        f"tap to server, loaded:    {figures(delays)} (target p99 < 20 ms; beside a drain of"
        f" {args.backlog} taps, {left} still pending at the last tap)"
    )


class Fifo:
    """The hook's lines, each with the monotonic time it arrived, read in a thread."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        # Read-write: the open does not wait for a writer, and no EOF between commands.
        self._fd = os.open(path, os.O_RDWR)
        self.lines: list[tuple[str, float]] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._fd, 65536):
            now = time.monotonic()
            buffer += chunk
            *whole, buffer = buffer.split(b"\n")
            with self._changed:
                self.lines += [(line.decode(), now) for line in whole]
                self._changed.notify_all()

    def wait(self, count: int, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.lines) >= count, timeout_s)


def to_signal(folder: Path, sim: Simulator, args: argparse.Namespace) -> None:
    folder.mkdir()
    hook = folder / "hook.sh"
    hook.write_text(HOOK)
    fifo = Fifo(folder / "heard.fifo")
    command = f"/bin/sh {hook} {folder / 'heard.fifo'}"
    config = write_config(
        folder, sim.integration_url, feedback={"command": command}, flush_interval="0s"
    )
    daemon = Daemon(config)
    daemon.wait("gateagent started", timeout_s=60)
    typed = tap_all(daemon, args.taps, args.every_ms)
    # Two signals a tap (recorded, then the verdict); fewer if the command fell behind
    # and the daemon dropped some (the safety net, reported below).
    fifo.wait(2 * args.taps, timeout_s=30)
    daemon.wait_recorded(typed, timeout_s=30)
    daemon.stop()
    heard: dict[str, dict[str, float]] = {"recorded": {}, "verdict": {}}
    for line, at in fifo.lines:
        outcome, card = line.split()
        kind = "recorded" if outcome == "recorded" else "verdict"
        heard[kind].setdefault(card, at)
    logged = [(daemon.recorded_at[c] - t) * 1000 for c, t in typed.items()]
    slow = [n for n, ms in enumerate(logged, 1) if ms > 50]
    if slow:
        print(f"taps over 50 ms to 'tap recorded': {len(slow)}, e.g. tap {slow[:8]}")
    recorded = [(at - typed[c]) * 1000 for c, at in heard["recorded"].items()]
    verdict = [(at - typed[c]) * 1000 for c, at in heard["verdict"].items()]
    missed = 2 * args.taps - len(recorded) - len(verdict)
    print(f"tap to 'tap recorded':    {figures(logged)} (the commit, as the log line)")
    print(f"tap to recorded signal:   {figures(recorded)} (the command hook; target p99 < 50 ms)")
    print(f"tap to verdict signal:    {figures(verdict)} (with the server's answer)")
    print(f"signals not heard: {missed} of {2 * args.taps}")
    spawn = []
    for n in range(100):
        count = len(fifo.lines) + 1
        before = time.monotonic()
        subprocess.run(
            ["/bin/sh", str(hook), str(folder / "heard.fifo")],
            env={"PATH": "/usr/bin:/bin", "FEEDBACK_OUTCOME": "bare", "FEEDBACK_CARD_NO": str(n)},
            check=True,
        )
        fifo.wait(count, timeout_s=5)
        spawn.append((fifo.lines[-1][1] - before) * 1000)
    print(f"the command alone:        {figures(spawn)} (spawned here, 100 runs)")
    print(f"a bare commit:            {figures(bare_commits(folder, 300))} (sqlite3, WAL, FULL)")


def bare_commits(folder: Path, count: int) -> list[float]:
    conn = sqlite3.connect(folder / "bare.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE taps (id INTEGER PRIMARY KEY, card_no TEXT)")
    took = []
    for n in range(count):
        before = time.monotonic()
        conn.execute("INSERT INTO taps (card_no) VALUES (?)", (f"{n:010d}",))
        took.append((time.monotonic() - before) * 1000)
    conn.close()
    return took


def figures(delays_ms: list[float]) -> str:
    if not delays_ms:
        return "none"
    ordered = sorted(delays_ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    return f"p50 {p50:5.1f} ms, p99 {p99:5.1f} ms, max {ordered[-1]:5.1f} ms (n={len(ordered)})"


if __name__ == "__main__":
    main()
