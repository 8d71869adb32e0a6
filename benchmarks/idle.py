"""An idle gate: RSS, CPU time and start-up, with two readers configured, one missing.

    .venv/bin/python benchmarks/idle.py [--seconds 60]

One reader is a pseudo-terminal (a serial reader that is plugged in), the other a
serial path that does not exist: the daemon retries it every 1.5 s, which must cost no
measurable CPU. Start-up is measured from spawning `gateagent run` to READY=1 on a
real sd_notify socket. CPU time is the sum of the threads' run time in
/proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat counts 10 ms ticks).

Then the RSS that each import the daemon needs adds, one interpreter per step: what
bounds the daemon's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

from harness import TOKEN, machine, rss_mb, unit_environment

from gateagent.simulator import Simulator
from gateagent.store import Store

# Cumulative: each step imports what the one before did, and more. sqlite-utils (a first
# start's migrations) and pydantic-settings (GATEAGENT_* overrides) are not among them.
IMPORT_STEPS = [
    ("python", "pass"),
    ("stdlib: asyncio, ssl, sqlite3, logging", "import asyncio, ssl, sqlite3, logging, json"),
    ("+ pydantic (gateagent.config)", "from gateagent import config"),
    ("+ pyserial, tenacity, the rest of gateagent", "from gateagent import cli, daemon"),
    ("+ the uploader: httpx, httpcore (after READY=1)", "import gateagent.uplink.client"),
    ("+ prometheus-client (after READY=1)", "import gateagent.metrics"),
]


def import_rss() -> list[tuple[str, float]]:
    steps: list[tuple[str, float]] = []
    code = ""
    for label, statement in IMPORT_STEPS:
        code += statement + "\n"
        probe = code + "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **unit_environment()},
        )
        steps.append((label, int(done.stdout) / 1024))
    return steps


def cpu_s(pid: int) -> float:
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total_ns += int((task / "schedstat").read_text().split()[0])
    return total_ns / 1e9


def drain(notify: socket.socket) -> None:
    notify.settimeout(None)
    with contextlib.suppress(OSError):
        while notify.recv(4096):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--listen", default="", help='also serve /metrics, e.g. "127.0.0.1:9920"')
    args = parser.parse_args()
    master, slave = os.openpty()
    tty.setraw(slave)
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as name, Simulator(token=TOKEN) as sim:
        folder = Path(name)
        (folder / "config.toml").write_text(
            "\n".join(
                [
                    "[device]",
                    "require_clock_sync = false",
                    "[storage]",
                    f'path = "{folder / "taps.db"}"',
                    "[[readers]]",
                    'name = "entrance"',
                    'kind = "serial"',
                    f'path = "{os.ttyname(slave)}"',
                    "[[readers]]",
                    'name = "exit"',
                    'kind = "serial"',
                    f'path = "{folder / "not-plugged-in"}"',
                    "[uplink]",
                    f'url = "{sim.integration_url}"',
                    f'token = "{TOKEN}"',
                    "gate = 4",
                    # Metrics on, as on a gate with node_exporter (the default path
                    # is this machine's own node_exporter folder).
                    "[metrics]",
                    f'textfile = "{folder / "gateagent.prom"}"',
                    *([f'listen = "{args.listen}"'] if args.listen else []),
                ]
            )
            + "\n"
        )
        # A restart, as every start of a gate but its first: the schema is up to date, so
        # sqlite-utils is not imported (gateagent/store.py).
        Store.open(folder / "taps.db").close()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(folder / "notify"))
        notify.settimeout(30)
        spawned = time.monotonic()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gateagent", "run", "--config", str(folder / "config.toml")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={
                **os.environ,
                **unit_environment(),
                "NOTIFY_SOCKET": str(folder / "notify"),
                "WATCHDOG_USEC": "30000000",
            },
        )
        while b"READY=1" not in notify.recv(4096):
            pass
        ready_s = time.monotonic() - spawned
        # Go on reading, as systemd does, so STATUS= and WATCHDOG=1 have somewhere to go.
        threading.Thread(target=lambda: drain(notify), daemon=True).start()
        time.sleep(3)  # settle: readers opened, first housekeeping done
        before = cpu_s(daemon.pid)
        time.sleep(args.seconds)
        used = cpu_s(daemon.pid) - before
        rss = rss_mb(daemon.pid)
        daemon.terminate()
        daemon.wait(30)
        notify.close()
    os.close(master)
    os.close(slave)
    print(f"machine: {machine()}")
    print(f"start to READY=1: {ready_s:.2f} s (target < 1 s)")
    print(
        f"idle over {args.seconds:g} s: CPU {used:.3f} s = {100 * used / args.seconds:.3f} % (target < 0.1 %)"
    )
    print(f"RSS: {rss:.1f} MB (target <= 42 MB, issue 14)")
    print("RSS by import (cumulative):")
    previous = 0.0
    for label, mb in import_rss():
        print(f"  {label:45s} {mb:5.1f} MB (+{mb - previous:.1f})")
        previous = mb


if __name__ == "__main__":
    main()
