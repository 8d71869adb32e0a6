"""Draining a backlog: pending taps delivered against the simulator with added latency.

    .venv/bin/python benchmarks/drain.py [--taps 10000] [--latency-ms 20] [--concurrency 4]
    .venv/bin/python benchmarks/drain.py --latency-ms 150 --concurrency 16   # a far server
    .venv/bin/python benchmarks/drain.py --instructions --taps 1000

The ideal rate is concurrency / latency (200 taps/s for 4 and 20 ms): what a client
that spent no time of its own would reach. The rate is taken from the first answer to
the last, so the wait for the uplink's first probe after `up()` (a backoff hold of the
failures while the simulator was down) is not in it. Prints the rate, its ratio to the
ideal, the daemon's RSS idle and during the drain, and checks that taps of each card
arrived in the order they happened.

`--instructions`: the daemon under `valgrind --tool=callgrind` (the simulator outside
it), draining N and then 2N taps; (Ir(2N) - Ir(N)) / N is what one delivered tap costs
in user-space instructions, with start-up and stop excluded. Repeatable whatever the
machine's load, unlike the rate.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
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
ROSTER = {f"{n:010d}": f"Student {n}" for n in range(1, CARDS + 1)}


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
    parser.add_argument(
        "--instructions", action="store_true", help="Ir per delivered tap under callgrind"
    )
    parser.add_argument(
        "--bare",
        choices=["http.client", "httpx"],
        help="no daemon: `concurrency` threads POSTing the same requests in a loop",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"backlog: {args.taps} taps of {CARDS} cards, latency {args.latency_ms:g} ms,"
        f" concurrency {args.concurrency}"
    )
    if args.instructions:
        instructions(args)
    elif args.bare:
        bare(args)
    else:
        drain(args)


# The bare loop, in a process of its own as the daemon is (the simulator's threads would
# share its GIL otherwise): argv = kind, url, token, concurrency, requests.
BARE = """
import http.client, itertools, json, sys, threading
from datetime import UTC, datetime
from urllib.parse import urlsplit
import httpx
kind, url, token = sys.argv[1:4]
concurrency, requests = int(sys.argv[4]), int(sys.argv[5])
where = urlsplit(url)
tanggal = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
shared = httpx.Client() if kind == "httpx" else None
counter = itertools.count()
def body():
    card = f"{next(counter) % CARDS + 1:010d}"
    return {"gate": 4, "card_no": card, "tanggal": tanggal, "token": token, "checktype": 1}
def loop(n):
    if shared is not None:
        for _ in range(n):
            shared.post(url, json=body()).json()
        return
    conn = http.client.HTTPConnection(where.hostname, where.port)
    for _ in range(n):
        conn.request("POST", where.path, json.dumps(body()).encode(), {"Content-Type": "application/json"})
        json.loads(conn.getresponse().read())
threads = [threading.Thread(target=loop, args=(requests // concurrency,)) for _ in range(concurrency)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
""".replace("CARDS", str(CARDS))


def bare(args: argparse.Namespace) -> None:
    """The same requests from `concurrency` threads, each in a loop on a keep-alive
    connection (http.client, or one httpx.Client shared as the daemon shares its pool):
    what the client library and the simulator leave of the ideal, gateagent's own work
    aside."""
    with Simulator(token=TOKEN, roster=ROSTER, latency_s=args.latency_ms / 1000) as sim:
        subprocess.run(
            [sys.executable, "-c", BARE, args.bare, sim.integration_url, TOKEN,
             str(args.concurrency), str(args.taps)],
            check=True,
        )  # fmt: skip
        accepted = sim.accepted()
    elapsed = accepted[-1].at_mono - accepted[0].at_mono
    rate = (len(accepted) - 1) / elapsed
    ideal = args.concurrency / (args.latency_ms / 1000)
    print(
        f"bare {args.bare}: {len(accepted)} requests in {elapsed:.1f} s: {rate:.1f}/s,"
        f" ideal {ideal:.0f}: ratio {rate / ideal:.2f}"
    )


def drain(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=ROSTER, latency_s=args.latency_ms / 1000) as sim,
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
        accepted = sim.wait_for_accepted(args.taps, timeout_s=3600)
        stop.set()
        daemon.stop()

    # First answer to last: n - 1 intervals.
    elapsed = accepted[-1].at_mono - accepted[0].at_mono
    rate = (args.taps - 1) / elapsed
    ideal = args.concurrency / (args.latency_ms / 1000)
    order_ok = True
    seen: dict[str, str] = {}
    for received in accepted:
        card, at = str(received.body["card_no"]), str(received.body["tanggal"])
        if at < seen.get(card, ""):
            order_ok = False
        seen[card] = at
    print(
        f"drained in {elapsed:.1f} s: {rate:.1f} taps/s, ideal {ideal:.0f}:"
        f" ratio {rate / ideal:.2f} (target >= 0.9)"
    )
    print(
        f"RSS idle {idle_rss:.1f} MB, during drain max {max(rss, default=0):.1f} MB "
        f"({max(rss, default=0) / idle_rss:.2f} x idle, target <= 1.2)"
    )
    print(
        f"per-card order kept: {order_ok}; requests {len(sim.received)}, accepted {len(accepted)}"
    )


def instructions(args: argparse.Namespace) -> None:
    counts = [callgrind_drain(taps, args) for taps in (args.taps, 2 * args.taps)]
    per_tap = (counts[1] - counts[0]) / args.taps
    print(f"Ir: {counts[0]:,} draining {args.taps}, {counts[1]:,} draining {2 * args.taps}")
    print(f"Ir per delivered tap: {per_tap / 1e6:.3f} M")


def callgrind_drain(taps: int, args: argparse.Namespace) -> int:
    """The daemon's instructions from start to exit, draining `taps` pending taps."""
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=ROSTER, latency_s=args.latency_ms / 1000) as sim,
    ):
        folder = Path(name)
        backlog(folder / "taps.db", taps)
        config = write_config(
            folder, sim.integration_url, concurrency=args.concurrency, flush_interval="30s"
        )
        out = folder / "callgrind.out"
        process = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "gateagent",
                "run",
                "--config",
                str(config),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        delivered = 0
        for line in process.stderr:
            delivered += b"tap delivered" in line
            if delivered == taps:
                break
        process.terminate()
        process.communicate(timeout=600)
        totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
        return int(totals[0].split()[1])


if __name__ == "__main__":
    main()
