"""An idle gate: RSS, CPU time and start-up, with two readers configured, one missing.

    .venv/bin/python benchmarks/idle.py [--seconds 60]

One reader is a pseudo-terminal (a serial reader that is plugged in), the other a
serial path that does not exist: the daemon retries it every 1.5 s, which must cost no
measurable CPU. Start-up is measured from spawning `gateagent run` to READY=1 on a
real sd_notify socket.
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

from harness import TOKEN, machine, rss_mb

from gateagent.simulator import Simulator


def drain(notify: socket.socket) -> None:
    notify.settimeout(None)
    with contextlib.suppress(OSError):
        while notify.recv(4096):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
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
                ]
            )
            + "\n"
        )
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
        stat = Path(f"/proc/{daemon.pid}/stat")
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu_s() -> float:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before = cpu_s()
        time.sleep(args.seconds)
        used = cpu_s() - before
        rss = rss_mb(daemon.pid)
        daemon.terminate()
        daemon.wait(30)
        notify.close()
    os.close(master)
    os.close(slave)
    print(f"machine: {machine()}")
    print(f"start to READY=1: {ready_s:.2f} s (target < 1 s)")
    print(
        f"idle over {args.seconds:g} s: CPU {used:.2f} s = {100 * used / args.seconds:.3f} % (target < 0.1 %)"
    )
    print(f"RSS: {rss:.1f} MB (target < 40 MB)")


if __name__ == "__main__":
    main()
