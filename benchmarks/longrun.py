"""Long run (issue 14): memory stays flat over 1,000,000 taps recorded and delivered,
10,000 reader reconnects and 1,000 server faults.

    .venv/bin/python benchmarks/longrun.py [--taps 1000000] [--reconnects 10000] [--faults 1000]

One `gateagent run` (harness.Daemon) with

- a stdin reader, typed in bursts; the next burst waits until the taps before it are
  recorded and all but a small backlog delivered, so the queue stays short and what
  RSS shows is what the daemon keeps, not a growing backlog;
- `--readers` serial readers on pseudo-terminals behind by-id style links, each one
  unplugged and plugged in again in turn, with one card read per connection (a reader
  retries every 1.5 s, so they cycle side by side to reach `--reconnects` in minutes);
- the simulator, given one fault every taps/faults taps, in turn: a 503, a 429 with
  `Retry-After: 1`, a 500 with an HTML page, a dropped connection, and an outage of
  0.5 s (connections refused, open ones cut).

The daemon's RSS is sampled every few seconds. The figure: RSS at the end beside RSS
once the first 10,000 taps were delivered (target: within 2 MB). At the end every card
typed or read must be recorded and delivered, in each card's order.

`--heap FILE`: the daemon writes its heap to FILE every 10 s (`heapwatch/`): RSS's
anonymous part beside glibc's bytes in use and the free bytes its heaps keep, SQLite's
own memory, Python's allocated blocks and pymalloc's arenas, to tell a leak from what
the allocator keeps; and every minute the types of objects that grew and the biggest
containers, by the attribute holding them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

from harness import TOKEN, Daemon, machine, unit_environment, write_config

from gateagent.simulator import Simulator

BURST = 500
BACKLOG = 2000  # taps recorded (by every reader) and not yet delivered before a burst waits
CARDS = 20000
FIRST = 10000  # RSS is compared with its value once this many taps were delivered
WAIT_S = 120.0  # safety net: each wait returns when its log line arrives


class Plug:
    """A serial reader behind `link`: a new pseudo-terminal each time it is plugged in
    (as in replug_soak.py: the slave stays open here, so the master never sees the port
    closed between the reader's opens)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self._fds: tuple[int, int] | None = None

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._fds = (master, slave)
        os.symlink(os.ttyname(slave), self.link)

    def write(self, data: bytes) -> None:
        assert self._fds is not None
        os.write(self._fds[0], data)

    def unplug(self) -> None:
        self.link.unlink()
        assert self._fds is not None
        for fd in self._fds:
            os.close(fd)  # the reader's next read sees the hang-up
        self._fds = None


def cycle(daemon: Daemon, plug: Plug, name: str, cards: list[str], read: list[int]) -> None:
    """Plugged in before the daemon started: per card, read it, unplug, plug in again.
    `read[0]`: the cards recorded so far."""
    for turn, card in enumerate(cards, start=1):
        daemon.wait(f"reader connected reader={name}", turn, WAIT_S)
        plug.write(card.encode() + b"\r\n")
        # Unplugged only once the card is recorded: bytes left in a pty that is closed
        # are dropped by the kernel, and a card never read is not the daemon's to lose.
        daemon.wait_recorded([card], WAIT_S)
        read[0] = turn
        plug.unplug()
        daemon.wait(f"reader disconnected reader={name}", turn, WAIT_S)
        plug.plug()


def fault(sim: Simulator, n: int) -> None:
    kind = n % 5
    if kind == 0:
        sim.fail_next(1, 503)
    elif kind == 1:
        sim.fail_next(1, 429, retry_after="1")
    elif kind == 2:
        sim.fail_next(1, 500, body=b"<html><body>Internal Server Error</body></html>")
    elif kind == 3:
        sim.drop_next(1)
    else:
        sim.down()
        time.sleep(0.5)  # the outage's length is the fault itself
        sim.up()


def delivered(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(
            conn.execute("SELECT count(*) FROM taps WHERE state = 'delivered'").fetchone()[0]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=1_000_000, help="typed on the stdin reader")
    parser.add_argument("--reconnects", type=int, default=10_000)
    parser.add_argument("--readers", type=int, default=40, help="serial readers cycling")
    parser.add_argument("--faults", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--log", type=Path, help="keep the daemon's log here")
    parser.add_argument(
        "--heap", type=Path, help="the daemon's heap every 10 s to this file (heapwatch/)"
    )
    args = parser.parse_args()
    rng = random.Random(14)
    turns = -(-args.reconnects // args.readers)
    stdin_cards = [f"{n:010d}" for n in range(1, CARDS + 1)]
    serial_cards = [[f"9{r:03d}{t:06d}" for t in range(turns)] for r in range(args.readers)]
    roster = {card: "Student" for card in stdin_cards + [c for cs in serial_cards for c in cs]}
    print(machine(), file=sys.stderr)

    with (
        tempfile.TemporaryDirectory(dir=Path(__file__).parent) as scratch,
        Simulator(token=TOKEN, roster=roster) as sim,
    ):
        folder = Path(scratch)
        db = folder / "taps.db"
        plugs = [Plug(folder / f"serial-{n}") for n in range(args.readers)]
        readers = [{"name": "desk", "kind": "stdin"}] + [
            {"name": f"s{n}", "kind": "serial", "path": str(plug.link), "protocol": "lines"}
            for n, plug in enumerate(plugs)
        ]
        config = write_config(
            folder, sim.integration_url, readers, concurrency=args.concurrency, timeout="5s"
        )
        for plug in plugs:
            plug.plug()
        env = {**os.environ, **unit_environment()}
        if args.heap:
            watch = Path(__file__).resolve().parent / "heapwatch"
            paths = [str(watch), *filter(None, [os.environ.get("PYTHONPATH")])]
            env |= {"PYTHONPATH": os.pathsep.join(paths), "HEAPWATCH_FILE": str(args.heap)}
        daemon = Daemon(config, env=env)
        daemon.wait("gateagent started", 1, WAIT_S)
        started = time.monotonic()
        read = [[0] for _ in plugs]
        cyclers = [
            threading.Thread(target=cycle, args=(daemon, plug, f"s{n}", serial_cards[n], read[n]))
            for n, plug in enumerate(plugs)
        ]
        for thread in cyclers:
            thread.start()

        every = max(1, args.taps // max(1, args.faults))
        faults = typed = 0
        first_rss: float | None = None
        first_anon = 0.0
        samples: list[tuple[float, int, float]] = []  # (seconds, delivered, MB)
        while typed < args.taps:
            burst = min(BURST, args.taps - typed)
            daemon.type("".join(rng.choice(stdin_cards) + "\n" for _ in range(burst)))
            for n in range(typed, typed + burst):
                if n % every == every - 1 and faults < args.faults:
                    fault(sim, faults)
                    faults += 1
            typed += burst
            # Every reader's taps count, recorded and delivered: with the stdin reader's
            # alone, each serial tap let the backlog grow by one (8,214 pending taps seen
            # at 267,000), so RSS at the end was compared with a working set several
            # times smaller (sessions 5 to 8).
            recorded = typed + sum(n for (n,) in read)
            daemon.wait("tap recorded", recorded, WAIT_S)
            while (done := delivered(db)) < recorded - BACKLOG:
                time.sleep(0.2)  # the database's count, polled from outside
            now = time.monotonic() - started
            if first_rss is None and done >= FIRST:
                first_rss = daemon.rss_mb()
                first_anon = daemon.rss_mb("RssAnon")
            if not samples or now - samples[-1][0] >= 10:
                samples.append((now, done, daemon.rss_mb()))
                print(f"{now:6.0f} s {typed:>9,} typed {done:>9,} delivered "
                      f"{samples[-1][2]:.1f} MB (anon {daemon.rss_mb('RssAnon'):.1f})",
                      file=sys.stderr)  # fmt: skip
        for thread in cyclers:
            thread.join()
        total = typed + args.readers * turns
        while delivered(db) < total:
            time.sleep(0.5)  # the last taps, and those held after a dropped answer
        end_rss = daemon.rss_mb()
        end_anon = daemon.rss_mb("RssAnon")
        elapsed = time.monotonic() - started
        reconnects = sum(
            daemon.counts.get(f"reader connected reader=s{n}", 0) - 1 for n in range(args.readers)
        )
        code = daemon.stop()
        if args.log:
            shutil.copyfile(folder / "daemon.log", args.log)
        for plug in plugs:
            plug.unplug()
        order_kept = check_order(db, sim)

    assert first_rss is not None
    print(f"\n{machine()}")
    print(
        f"{typed:,} typed + {args.readers * turns:,} read on serial readers: {total:,} "
        f"recorded and delivered in {elapsed:.0f} s; {reconnects:,} reconnects; {faults:,} "
        f"server faults; exit {code}; per-card order kept: {order_kept}"
    )
    print(
        f"RSS once {FIRST:,} were delivered: {first_rss:.1f} MB; at the end: {end_rss:.1f} MB "
        f"({end_rss - first_rss:+.1f} MB; target within 2 MB); "
        f"max {max(mb for _, _, mb in samples):.1f} MB; of it anonymous (heap) "
        f"{first_anon:.1f} -> {end_anon:.1f} MB"
    )
    step = max(1, len(samples) // 20)
    print(
        "samples (s/delivered/MB):",
        " ".join(f"{s:.0f}/{d}/{mb:.1f}" for s, d, mb in samples[::step]),
    )


def check_order(db: Path, sim: Simulator) -> bool:
    """Each card's taps reached the server in the order they were tapped: per card, its
    requests' times never go back, and every tap's time arrived (a tap sent again after a
    dropped answer arrives twice in a row)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tapped: dict[str, set[str]] = {}
        for card, at in conn.execute("SELECT card_no, tapped_at FROM taps"):
            tapped.setdefault(card, set()).add(at)
    arrived: dict[str, list[str]] = {}
    for record in sim.accepted():
        arrived.setdefault(str(record.body["card_no"]), []).append(str(record.body["tanggal"]))
    return all(
        arrived.get(card) == sorted(arrived.get(card, [])) and set(arrived.get(card, [])) == times
        for card, times in tapped.items()
    )


if __name__ == "__main__":
    main()
