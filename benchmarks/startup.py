"""Start-up in instructions: `gateagent run` from exec to READY=1, counted by callgrind.

    .venv/bin/python benchmarks/startup.py [--fresh] [--annotate N] [--imports]

benchmarks/idle.py's start-up figure in instructions (Ir) instead of seconds, so it
repeats whatever else the machine runs: a stdin reader (a pipe kept open), a serial
reader that is not plugged in, an `http://` uplink to the simulator, the metrics
textfile on, PYTHONHASHSEED=0, the modules' bytecode written (as pip installs them). The database exists already (a
restart, as on every boot but the first) unless `--fresh`: the first start, with the
schema's migrations.

callgrind dumps its counts after every `socket.sendto` (`--dump-after`): the daemon's
sd_notify datagrams are its only ones, so the dumps up to the one after the READY=1
datagram add up to exec -> READY=1 exactly, however late this script notices it. Each
datagram is printed with the instructions before it. The daemon runs some 50 times
slower under valgrind, so the script runs `gateagent run` as `python -m gateagent run`
does but with a longer wait for the database before READY=1 (the daemon's 5 s would pass
on a first start).

`--annotate N` prints callgrind_annotate's N costliest functions (inclusive) up to
READY=1; `--imports` what each import of the daemon costs, cumulative, one interpreter
per step (as benchmarks/idle.py does for RSS).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import TOKEN, unit_environment, write_config

from gateagent.simulator import Simulator

# As installed (pip compiles the modules): the uncounted first start writes the bytecode
# the counted one reads, whatever the shell's PYTHONDONTWRITEBYTECODE says.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV |= unit_environment() | {"PYTHONHASHSEED": "0"}
# `gateagent run` (what `python -m gateagent run` runs), with a longer wait for the
# database before READY=1: 50 times slower under valgrind, a first start (migrations)
# would pass the daemon's 5 s and send READY=1 without it.
RUN = (
    "import sys; import gateagent.daemon; gateagent.daemon.READY_WAIT_S = 600.0;"
    " from gateagent.cli import main; sys.exit(main(['run', '--config', sys.argv[1]]))"
)


# Cumulative, in the order the daemon imports them.
IMPORT_STEPS = [
    ("python", "pass"),
    ("+ gateagent.cli (argparse, sqlite3, logging, the store)", "import gateagent.cli"),
    ("+ pydantic, the config models (gateagent.config)", "from gateagent import config"),
    ("+ asyncio, pyserial, tenacity, ... (gateagent.daemon)", "from gateagent import daemon"),
    ("after READY=1: + httpx (the uploader)", "import gateagent.uplink.client"),
    ("after READY=1: + prometheus_client (metrics)", "import gateagent.metrics"),
    ("a first start only: + sqlite-utils (migrations)", "import sqlite_utils"),
    ("a GATEAGENT_<SECTION> variable only: + pydantic-settings", "import pydantic_settings"),
]


def instructions(code: str) -> int:
    """Ir of `python -c code`, whole."""
    with tempfile.TemporaryDirectory() as name:
        out = Path(name) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                code,
            ],
            env=ENV,
            capture_output=True,
            check=True,
        )
        found = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
        assert found is not None
        return int(found[1])


def start(
    config: Path, notify: Path, prefix: list[str]
) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """Spawn the daemon (under `prefix`); return it and its datagrams up to READY=1."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(600)
        daemon = subprocess.Popen(
            [*prefix, sys.executable, "-c", RUN, str(config)],
            stdin=subprocess.PIPE,  # held open: the stdin reader waits for taps
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV | {"NOTIFY_SOCKET": str(notify)},
        )
        datagrams = [listener.recv(4096)]
        while b"READY=1" not in datagrams[-1].split(b"\n"):
            datagrams.append(listener.recv(4096))
    notify.unlink()
    return daemon, datagrams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="no database yet (migrations due)")
    parser.add_argument("--annotate", type=int, default=0, metavar="N")
    parser.add_argument("--imports", action="store_true", help="the cost of each import")
    args = parser.parse_args()
    if args.imports:
        print("Ir by import (cumulative):")
        code, previous = "", 0
        for label, statement in IMPORT_STEPS:
            code += statement + "\n"
            count = instructions(code)
            print(f"  {label:58s} {count / 1e6:7.1f} M (+{(count - previous) / 1e6:.1f})")
            previous = count
        return
    with tempfile.TemporaryDirectory() as name, Simulator(token=TOKEN) as sim:
        folder = Path(name)
        config = write_config(folder, sim.integration_url)
        with config.open("a") as appended:  # not this machine's node_exporter folder
            appended.write(f'[metrics]\ntextfile = "{folder / "gateagent.prom"}"\n')
        daemon, _ = start(config, folder / "notify", [])
        daemon.terminate()
        daemon.wait(30)
        if args.fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{folder / 'taps.db'}{suffix}").unlink(missing_ok=True)
        out = folder / "callgrind.out"
        daemon, datagrams = start(
            config,
            folder / "notify",
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-after=sock_sendto",
                f"--callgrind-out-file={out}",
            ],
        )
        # The READY=1 dump is written as sendto returns, which may be after it arrived.
        dumps = [Path(f"{out}.{n}") for n in range(1, len(datagrams) + 1)]
        while not (dumps[-1].exists() and "\ntotals: " in dumps[-1].read_text()):
            if daemon.poll() is not None:
                raise SystemExit(f"valgrind ended ({daemon.returncode}) before its last dump")
            time.sleep(0.1)  # callgrind writes a file: nothing to wait on
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(60)
        total = 0
        for dump, datagram in zip(dumps, datagrams, strict=True):
            text = dump.read_text()
            assert "Trigger: --dump-after=" in text, f"{dump}: not a sendto dump"
            found = re.search(r"^totals: (\d+)", text, re.MULTILINE)
            assert found is not None
            total += int(found[1])
            print(f"  {int(found[1]) / 1e6:8.1f} M, then {datagram.decode()[:60]!r}")
        print(f"exec -> READY=1: {total / 1e6:,.1f} M instructions (Ir)")
        assert not any(b"database not open" in datagram for datagram in datagrams)
        if args.annotate:
            annotate = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", *map(str, dumps)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows = [line for line in annotate.stdout.splitlines() if re.match(r"^\s*[\d,]+ ", line)]
            print("\n".join(rows[: args.annotate]))


if __name__ == "__main__":
    main()
