"""Instructions (valgrind's Ir) per recorded tap, per delivered tap and from exec to
READY=1, beside the floors they are compared with (issue 14).

    .venv/bin/python benchmarks/instructions.py [--taps 200] [--json]

callgrind counts the user-space instructions of every thread of a process, whatever
the machine's load (PYTHONHASHSEED=0 everywhere). How the figures are cut:

- Marks: `callgrind_control --dump=LABEL` makes callgrind write what it counted since
  its last dump; a window is the parts between its start and end marks, so start-up and
  shutdown are never in it. Each path runs a window of N units and one of 2N; per unit
  is both together over 3N. What a window holds besides its units (the marks; the 1 s
  wait before the end mark, at the idle daemon's ~0.18M Ir/s) is under 1 % of it.
  Together, not the difference of the two, and N = 200: a full garbage collection
  (~18M Ir, about one per 600 taps here, since the recorded taps stay pending in
  memory) falls in a window or not, and the difference of two short windows would
  double what that moves.
- The daemon is a real `python -m gateagent run` under callgrind, one stdin reader,
  with a $NOTIFY_SOCKET this script reads as systemd does. The simulator runs in this
  process, outside valgrind.
- Recorded: `flush_interval = "1h"` (the uploader idle, as in ingest.py). Burst: the
  window's taps written at once; lone: each after the previous one's `tap recorded`
  line, as taps come at a real gate.
- Delivered: pending taps written beforehand with the daemon not running (drain.py's
  backlog), drained against the simulator with 20 ms latency, concurrency 4. A drain
  begins at start, so it is not cut into windows: two daemons drain N and 2N taps, each
  counted from exec to its last `tap delivered` line, and per tap is the difference
  over N (start-up cancels). `timeout = "60s"`: under valgrind the daemon is ~50 times
  slower, and the default 10 s must not fire for that.
- Exec to READY=1, on a database made beforehand (as at every start but the first):
  callgrind also dumps before every `sendto` (the daemon's sd_notify datagrams, its only
  sendto calls: checked, one dump per datagram), so the parts until the one that ends at
  READY=1's are exact. READY=1 waits at most 5 s for the database (`READY_WAIT_S`);
  under valgrind opening it takes longer and READY=1 would come before it, after a
  load-dependent part of the work, so the daemon is started through a wrapper that lifts
  that limit: the one internal this script touches (if it is gone and READY=1 comes
  early, the "gateagent started" line says `pending=-` and the run stops).
- Floors: small programs, each in its own process under callgrind, cut the same way:
  they wait on stdin between windows, so a window holds their loop alone. The imports
  are measured one after the other in one interpreter, in the daemon's order.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drain import CARDS as BACKLOG_CARDS
from drain import backlog
from harness import TOKEN, Daemon, machine, unit_environment, write_config

import gateagent
from gateagent.simulator import Simulator
from gateagent.store import Store, iso

# As installed: pip compiles the modules it installs, and the daemon reads their bytecode
# (compiling gateagent's own at every start cost 260M Ir more where the shell says
# PYTHONDONTWRITEBYTECODE; main() compiles them first).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV |= unit_environment() | {"PYTHONHASHSEED": "0"}
# Taps go round these cards, so every window taps each card as often (a multiple of it).
CARDS = 50
# After a window's last line the daemon's loop still has work of that tap (the log line
# is written before it): no line says when it is done, so the end mark waits this long.
SETTLE_S = 1.0
IDLE_S = 10.0
LATENCY_S = 0.020
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"  # what gateagent's uplink trusts
STDIN_READER = {"name": "desk", "kind": "stdin"}
BARE, SAME_SQL = "bare INSERT+COMMIT", "gateagent SQL"
HTTP, SYNC, ASYNC = "http.client", "httpx.Client", "httpx.AsyncClient x4"

WRAPPER = """\
import runpy, sys
import gateagent.daemon
gateagent.daemon.READY_WAIT_S = 3600.0  # see benchmarks/instructions.py
sys.argv = ["gateagent", "run", "--config", sys.argv[1]]
runpy.run_module("gateagent", run_name="__main__")
"""

# A floor program defines run(n), n units, and is warmed up; then it waits on stdin.
LOOP = """
print("ready", flush=True)
for line in sys.stdin:
    run(int(line))
    print("done", flush=True)
"""
SQLITE_BARE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = FULL")
conn.execute("CREATE TABLE taps (seq INTEGER PRIMARY KEY, card_no TEXT, tapped_at TEXT)")
conn.commit()
count = 0
def run(n):
    global count
    for _ in range(n):
        count += 1
        conn.execute("INSERT INTO taps (card_no, tapped_at) VALUES (?, ?)", (f"{count:010d}", sys.argv[2]))
        conn.commit()
run(50)
"""
# What Store.record executes for a tap, on the schema Store.open made: its connection's
# settings, the direction query (the card's first check-in today), the INSERT (which
# enters the indexes and fires the counts trigger), one transaction taken up front.
GATEAGENT_SQL = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=10.0, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = FULL")
at, midnight = sys.argv[2], sys.argv[2][:10] + "T00:00:00.000Z"
count = 0
def run(n):
    global count
    for _ in range(n):
        count += 1
        card_no = f"{count % %(cards)d + 1:010d}"
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "SELECT min(tapped_at) FROM taps WHERE card_no = ? AND checktype = 1"
            " AND tapped_at >= ? AND tapped_at <= ? AND state IN ('pending', 'delivered')",
            (card_no, midnight, at),
        ).fetchone()
        conn.execute(
            "INSERT INTO taps (tap_id, card_no, reader, gate, direction, checktype, state,"
            " reason, tapped_at, at_mono, boot_id, clock_synced, recorded_at, settled_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"tap-{count}", card_no, "desk", None, "auto", 1 if count <= %(cards)d else 2,
             "pending", None, at, float(count), "boot", 1, at, None),
        )
        conn.execute("COMMIT")
run(%(cards)d)
""".replace("%(cards)d", str(CARDS))
# The integration profile's body (uplink/profiles.py), one card after another.
HTTP_BODY = """
import json, sys
URL, TOKEN, TANGGAL = sys.argv[1:4]
count = 0
def body():
    global count
    count += 1
    return {"gate": 4, "card_no": f"{count % %(cards)d + 1:010d}", "tanggal": TANGGAL,
            "token": TOKEN, "checktype": 1 if count <= %(cards)d else 2}
""".replace("%(cards)d", str(CARDS))
HTTP_CLIENT = """
import http.client
from urllib.parse import urlsplit
where = urlsplit(URL)
conn = http.client.HTTPConnection(where.hostname, where.port)
def run(n):
    for _ in range(n):
        conn.request("POST", where.path, json.dumps(body()).encode(), {"Content-Type": "application/json"})
        json.loads(conn.getresponse().read())
run(52)
"""
HTTPX_SYNC = """
import httpx
client = httpx.Client()
def run(n):
    for _ in range(n):
        client.post(URL, json=body()).json()
run(52)
"""
HTTPX_ASYNC = """
import asyncio, httpx
client = httpx.AsyncClient()
loop = asyncio.new_event_loop()
async def worker(n):
    for _ in range(n):
        (await client.post(URL, json=body())).json()
async def together(n):
    await asyncio.gather(*(worker(n // 4 + (k < n % 4)) for k in range(4)))
def run(n):
    loop.run_until_complete(together(n))
run(52)
"""
IMPORTS = """
import sys
print("ready", flush=True)
for line in sys.stdin:
    exec(line)
    print("done", flush=True)
"""
# What `run` imports before READY=1 (2026-12), in its order: the stdlib, pydantic with
# the config's models, the daemon's libraries and modules. The sum beside the total says
# if it drifts.
IMPORT_STEPS = [
    ("stdlib: asyncio, sqlite3, ssl, logging, json", "import asyncio, sqlite3, ssl, logging, json"),
    ("pydantic", "from pydantic import BaseModel, Field, SecretStr"),
    ("gateagent.config (its pydantic models)", "import gateagent.config"),
    ("tenacity", "import tenacity"),
    ("pyserial", "import serial"),
    ("gateagent's own modules (cli, daemon, ...)", "import gateagent.cli, gateagent.daemon"),
]
# After READY=1 (the uploader, the metrics), or only at some starts: not in the sum.
LATER_STEPS = [
    ("after READY=1: the uploader (httpx, httpcore)", "import gateagent.uplink.client"),
    ("after READY=1: prometheus-client (metrics on)", "import gateagent.metrics"),
    ("a first start's migrations: sqlite-utils", "import sqlite_utils"),
    ("a GATEAGENT_* override: pydantic-settings", "import pydantic_settings"),
]
# What an https:// url adds to the start (the uplink's TLS context, network.py); an
# http:// url has none.
TLS_STEP = (
    "an https:// url's TLS context (system CAs)",
    f"ssl.create_default_context(cafile={SYSTEM_CA_FILE!r})"
    if Path(SYSTEM_CA_FILE).exists()
    else "ssl.create_default_context()",
)

STARTED = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


class Callgrind:
    """The valgrind command line for one process, its marks, and the parts they cut."""

    def __init__(self, out: Path, dump_before: str | None = None) -> None:
        self.out = out
        self.argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            f"--log-file={out}.log",
            "--dump-line=no",  # only the totals are read: smaller dumps
            *([f"--dump-before={dump_before}"] if dump_before else []),
        ]
        self.pid = 0

    def mark(self, label: str) -> None:
        subprocess.run(
            ["callgrind_control", f"--dump={label}", str(self.pid)], check=True, capture_output=True
        )

    def parts(self) -> list[tuple[str, int]]:
        """(trigger, Ir) of each dump so far, in order; a mark's trigger is `dump LABEL`."""
        numbered = [p for p in self.out.parent.glob(self.out.name + ".*") if p.suffix[1:].isdigit()]
        files = sorted(numbered, key=lambda p: int(p.suffix[1:]))
        parts = []
        for file in [*files, *([self.out] if self.out.exists() else [])]:
            trigger = ""
            with file.open() as lines:
                for line in lines:
                    if line.startswith("desc: Trigger: "):
                        trigger = line.removeprefix("desc: Trigger: ").strip()
                    elif line.startswith("summary: "):
                        parts.append((trigger, int(line.split()[1])))
                        break
        return parts

    def window(self, label: str) -> int:
        """Ir between the marks `LABEL start` and `LABEL end`."""
        parts = self.parts()
        triggers = [trigger for trigger, _ in parts]
        start = triggers.index(f"dump {label} start")
        end = triggers.index(f"dump {label} end")
        return sum(ir for _, ir in parts[start + 1 : end + 1])

    def until(self, label: str) -> int:
        """Ir from exec to the mark `LABEL`."""
        parts = self.parts()
        end = [trigger for trigger, _ in parts].index(f"dump {label}")
        return sum(ir for _, ir in parts[: end + 1])


class Gate:
    """`gateagent run` under callgrind, with an sd_notify socket read as systemd does."""

    def __init__(self, folder: Path, config: Path) -> None:
        self.cg = Callgrind(folder / "daemon.cg", dump_before="sendto")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(folder / "notify"))
        self.notify.settimeout(0.5)
        self.datagrams: list[bytes] = []
        self._received = threading.Condition()
        self._listening = True
        listener = threading.Thread(target=self._listen, daemon=True)
        listener.start()
        self._listener = listener
        command = [*self.cg.argv, sys.executable, "-c", WRAPPER, str(config)]
        self.daemon = Daemon(config, command, {**ENV, "NOTIFY_SOCKET": str(folder / "notify")})
        self.cg.pid = self.daemon.process.pid
        self.daemon.wait("gateagent started", timeout_s=1800)
        if "pending=-" in self.daemon.last_line["gateagent started"]:
            self.daemon.stop()
            raise SystemExit("READY=1 came before the database was open: see the docstring")

    def _listen(self) -> None:
        # Until stopped and nothing more is queued: every datagram sent is counted.
        while True:
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                if not self._listening:
                    return
                continue
            with self._received:
                self.datagrams.append(data)
                self._received.notify_all()

    def wait_status(self, text: bytes, timeout_s: float) -> None:
        """Until a datagram says `text` (e.g. b"uplink ok": the uploader is made)."""
        with self._received:
            if not self._received.wait_for(
                lambda: any(text in data for data in self.datagrams), timeout_s
            ):
                raise SystemExit(f"no sd_notify datagram said {text!r}")

    def stop(self) -> int:
        """Stop the daemon; Ir from exec to READY=1."""
        self.daemon.stop()
        self._listening = False
        self._listener.join()
        self.notify.close()
        parts = self.cg.parts()
        sends = [n for n, (trigger, _) in enumerate(parts) if trigger == "--dump-before=sendto"]
        if len(sends) != len(self.datagrams):
            raise SystemExit(
                f"{len(sends)} sendto calls but {len(self.datagrams)} datagrams: the daemon"
                " calls sendto for more than sd_notify, exec to READY=1 cannot be cut there"
            )
        ready = next(n for n, data in enumerate(self.datagrams) if b"READY=1" in data)
        return sum(ir for _, ir in parts[: sends[ready] + 1])


def card(n: int) -> str:
    return f"{n % CARDS + 1:010d}\n"


@dataclass
class Recorded:
    lone: float
    burst: float
    ready: int
    idle_per_s: float
    windows: dict[str, int]


def recorded(folder: Path, taps: int) -> Recorded:
    """Per recorded tap, lone and burst; exec to READY=1; Ir per second when idle."""
    config = write_config(
        folder, "http://127.0.0.1:9/", readers=[STDIN_READER], flush_interval="1h"
    )
    # No metrics: their import after READY=1 would run into the windows.
    config.write_text(config.read_text() + '[metrics]\ntextfile = ""\n')
    # Made beforehand, outside valgrind: a gate's start opens the database its first
    # start made (making it, the migrations, costs some 40M Ir more).
    Store.open(folder / "taps.db").close()
    progress("recorded taps: starting the daemon under callgrind")
    gate = Gate(folder, config)
    # The uploader is made after READY=1, its import in a thread: not in the windows.
    gate.wait_status(b"uplink ok", timeout_s=1800)
    daemon, typed = gate.daemon, 0

    def burst(count: int) -> None:
        nonlocal typed
        daemon.type("".join(card(typed + k) for k in range(count)))
        typed += count
        daemon.wait("tap recorded", typed, timeout_s=1800)

    def lone(count: int) -> None:
        for _ in range(count):
            burst(1)

    burst(CARDS)  # warm-up: each card's check-in; the windows' taps are check-outs
    gate.cg.mark("idle start")
    time.sleep(IDLE_S)  # nothing happening: what that costs, beside the windows' waits
    gate.cg.mark("idle end")
    labels = [f"{name} {count}" for name in ("lone", "burst") for count in (taps, 2 * taps)]
    for label in labels:
        progress(f"recorded taps: {label} taps")
        name, count = label.split()
        gate.cg.mark(f"{label} start")
        (lone if name == "lone" else burst)(int(count))
        time.sleep(SETTLE_S)
        gate.cg.mark(f"{label} end")
    ready = gate.stop()
    windows = {label: gate.cg.window(label) for label in labels}
    return Recorded(
        lone=(windows[f"lone {taps}"] + windows[f"lone {2 * taps}"]) / (3 * taps),
        burst=(windows[f"burst {taps}"] + windows[f"burst {2 * taps}"]) / (3 * taps),
        ready=ready,
        idle_per_s=gate.cg.window("idle") / IDLE_S,
        windows=windows,
    )


@dataclass
class Delivered:
    per_tap: float
    totals: dict[int, int]  # exec to the last "tap delivered", by taps drained
    readies: list[int]  # exec to READY=1 of each, with its backlog


def delivered(folder: Path, taps: int) -> Delivered:
    """Per delivered tap: two daemons drain N and 2N pending taps."""
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, BACKLOG_CARDS + 1)}
    totals: dict[int, int] = {}
    readies = []
    for count in (taps, 2 * taps):
        run = folder / f"drain-{count}"
        run.mkdir()
        backlog(run / "taps.db", count)
        with Simulator(token=TOKEN, roster=roster, latency_s=LATENCY_S) as sim:
            config = write_config(
                run,
                sim.integration_url,
                readers=[STDIN_READER],
                concurrency=4,
                flush_interval="0s",
                timeout="60s",
            )
            progress(f"delivered taps: draining {count} under callgrind")
            gate = Gate(run, config)
            gate.daemon.wait("tap delivered", count, timeout_s=1800)
            time.sleep(SETTLE_S)
            gate.cg.mark("drained")
            readies.append(gate.stop())
            if len(sim.received) != count:
                raise SystemExit(f"{len(sim.received)} requests for {count} taps")
        totals[count] = gate.cg.until("drained")
    return Delivered((totals[2 * taps] - totals[taps]) / taps, totals, readies)


def stepped(cg: Callgrind, program: str, args: list[str], steps: list[tuple[str, str]]) -> None:
    """`program` under callgrind: it prints "ready", then answers each line written to it
    with one; each step's line is cut between the marks `LABEL start` and `LABEL end`."""
    process = subprocess.Popen(
        [*cg.argv, sys.executable, "-c", program, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert process.stdin is not None and process.stdout is not None
    cg.pid = process.pid
    if process.stdout.readline() != "ready\n":
        raise SystemExit(f"{cg.out.name} failed: see {cg.out}.log")
    for label, line in steps:
        cg.mark(f"{label} start")
        process.stdin.write(line + "\n")
        process.stdin.flush()
        process.stdout.readline()
        cg.mark(f"{label} end")
    process.stdin.close()
    process.wait(600)


def floor(folder: Path, name: str, program: str, args: list[str], units: int) -> float:
    """Ir per unit of a floor program (see LOOP): windows of N and 2N units."""
    cg = Callgrind(folder / f"{name}.cg")
    stepped(cg, program + LOOP, args, [(str(count), str(count)) for count in (units, 2 * units)])
    return (cg.window(str(units)) + cg.window(str(2 * units))) / (3 * units)


def floors(folder: Path, units: int) -> dict[str, float]:
    low: dict[str, float] = {}
    now = iso(datetime.now(UTC))
    progress("floors: bare sqlite3 INSERT+COMMIT")
    low[BARE] = floor(folder, "bare", SQLITE_BARE, [str(folder / "bare.db"), now], units)
    Store.open(folder / "same.db").close()  # gateagent's schema, made outside valgrind
    progress("floors: gateagent's own SQL")
    low[SAME_SQL] = floor(folder, "same", GATEAGENT_SQL, [str(folder / "same.db"), now], units)
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, CARDS + 1)}
    # A minute back: the server refuses a tap dated after its own today.
    tanggal = iso(datetime.now(UTC) - timedelta(minutes=1))
    for name, program in ((HTTP, HTTP_CLIENT), (SYNC, HTTPX_SYNC), (ASYNC, HTTPX_ASYNC)):
        with Simulator(token=TOKEN, roster=roster, latency_s=LATENCY_S) as sim:
            progress(f"floors: {name}")
            args = [sim.integration_url, TOKEN, tanggal]
            low[name] = floor(folder, name.split()[0], HTTP_BODY + program, args, units)
            if len(sim.accepted()) != len(sim.received):
                raise SystemExit(f"floor {name}: the simulator refused some requests")
    return low


def imports(folder: Path) -> list[tuple[str, int]]:
    """Ir of the interpreter's start, the imports the daemon needs and the TLS context,
    one after the other in one interpreter."""
    progress("imports")
    cg = Callgrind(folder / "imports.cg")
    every = [*IMPORT_STEPS, *LATER_STEPS, TLS_STEP]
    stepped(cg, IMPORTS, [], [(str(n), statement) for n, (_, statement) in enumerate(every)])
    steps = [("interpreter start-up", cg.until("0 start"))]
    steps += [(label, cg.window(str(n))) for n, (label, _) in enumerate(every)]
    return steps


@dataclass
class Row:
    path: str
    ir: float
    floors: dict[str, float]  # the ratio is to the first
    limit: float
    target: str

    @property
    def ratio(self) -> float | None:
        return self.ir / next(iter(self.floors.values())) if self.floors else None

    @property
    def met(self) -> bool:
        return self.ir <= self.limit


def size(ir: float) -> str:
    if ir >= 100e6:
        return f"{ir / 1e6:,.0f}M"
    if ir >= 1e6:
        return f"{ir / 1e6:.2f}M"
    return f"{ir / 1e3:.0f}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=200, help=f"N, a multiple of {CARDS}")
    parser.add_argument("--json", action="store_true", help="one JSON object, for machines")
    args = parser.parse_args()
    if args.taps <= 0 or args.taps % CARDS:
        parser.error(f"--taps must be a positive multiple of {CARDS}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed: apt install valgrind", file=sys.stderr)
        sys.exit(2)
    compileall.compile_dir(Path(gateagent.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as name:
        folder = Path(name)
        (folder / "recorded").mkdir()
        rec = recorded(folder / "recorded", args.taps)
        dlv = delivered(folder, args.taps)
        low = floors(folder, args.taps)
        steps = imports(folder)
    progress("done")
    sql = {name: low[name] for name in (BARE, SAME_SQL)}
    http = {name: low[name] for name in (HTTP, SYNC, ASYNC)}
    rows = [
        Row("recorded tap, burst (run, stdin)", rec.burst, sql, 5 * low[BARE], "<= 5x bare"),
        Row("recorded tap, lone (a real gate)", rec.lone, sql, 5 * low[BARE], "<= 5x bare"),
        Row(
            "delivered tap (20 ms, concurrency 4)",
            dlv.per_tap,
            http,
            4 * low[HTTP],
            f"<= 4x {HTTP}",
        ),
        Row("exec to READY=1", rec.ready, {}, 600e6, "<= 600M"),
    ]
    imported = sum(ir for _, ir in steps[: 1 + len(IMPORT_STEPS)])
    if args.json:
        document = {
            "machine": machine(),
            "taps": args.taps,
            "rows": [{**asdict(row), "ratio": row.ratio, "met": row.met} for row in rows],
            "imports": dict(steps),
            "recorded_windows": rec.windows,
            "delivered_totals": dlv.totals,
            "ready_with_backlog": dlv.readies,
            "idle_ir_per_s": rec.idle_per_s,
        }
        print(json.dumps(document, indent=2))
        return
    print(f"machine: {machine()}; N = {args.taps} (windows of N and 2N units)")
    print(f"{'path':38} {'Ir/unit':>8}  {'floor(s)':52} {'ratio':>6}  {'target':18} met")
    for row in rows:
        floors_text = "; ".join(f"{name} {size(ir)}" for name, ir in row.floors.items())
        if not row.floors:
            floors_text = f"start-up + imports {size(imported)} ({100 * imported / row.ir:.0f} %)"
        ratio = f"{row.ratio:.1f}x" if row.ratio else "-"
        print(
            f"{row.path:38} {size(row.ir):>8}  {floors_text:52} {ratio:>6}  {row.target:18}"
            f" {'met' if row.met else 'not met'}"
        )
    print("exec to READY=1: the interpreter and the imports, one after the other in one:")
    for n, (label, ir) in enumerate(steps):
        if n == 1 + len(IMPORT_STEPS):
            print("not before READY=1, or not at every start (the same interpreter, on):")
        print(f"  {label:46} {size(ir):>8}")
    print(
        f"exec to READY=1 with {args.taps} and {2 * args.taps} pending taps: "
        + ", ".join(size(ir) for ir in dlv.readies)
    )
    print(f"idle daemon: {size(rec.idle_per_s)} Ir/s (in every window's wall time)")


if __name__ == "__main__":
    main()
