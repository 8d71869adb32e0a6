"""sd_notify from a real `gateagent run`: READY=1, STATUS=, WATCHDOG=1 while alive, also
while another process holds the database."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateagent.simulator import Simulator
from tests.settings import TOKEN, make_settings, write_config


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"\0gateagent-watchdog-{os.getpid()}-{time.monotonic_ns()}"
    sock.bind(name)
    yield sock, "@" + name[1:]
    sock.close()


def messages(sock: socket.socket, until_s: float) -> Iterator[tuple[float, str]]:
    """Datagrams as they arrive, each with its arrival time, until `until_s` (monotonic)."""
    while (left := until_s - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return
        yield time.monotonic(), data.decode()


def test_ready_status_and_watchdog_go_on_while_another_process_holds_the_database(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    with Simulator(token=TOKEN) as sim:
        settings = make_settings(tmp_path, sim.integration_url)
        config = write_config(tmp_path / "config.toml", settings)
        with (tmp_path / "run.log").open("wb") as log:  # for the secrets sweep
            daemon = subprocess.Popen(
                [sys.executable, "-m", "gateagent", "run", "--config", str(config)],
                stdin=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"},
            )
        try:
            seen: list[tuple[float, str]] = []
            for at, text in messages(sock, time.monotonic() + 30):
                seen.append((at, text))
                if sum("WATCHDOG=1" in t for _, t in seen) >= 3:
                    break
            texts = [text for _, text in seen]
            # The first STATUS= comes just before READY=1, so `systemctl status` has it;
            # the uploader is made after READY=1, and says so.
            assert texts[0].startswith("STATUS=0 pending, uplink starting, readers")
            assert texts[1] == "READY=1"
            assert any(t.startswith("STATUS=0 pending, uplink ok, readers") for t in texts[2:])

            # Another process holds the database's write lock and a reload (SIGHUP)
            # must write the readers' table: the reload waits for the database, the
            # event loop does not (issue 11, item 11), so the watchdog goes on.
            blocker = sqlite3.connect(settings.storage.path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            daemon.send_signal(signal.SIGHUP)
            locked_at = time.monotonic()
            pings = [at for at, t in messages(sock, locked_at + 4) if "WATCHDOG=1" in t]
            blocker.execute("COMMIT")
            blocker.close()
            assert len(pings) >= 4, pings  # every 0.5 s (half of WATCHDOG_USEC)

            resumed = [at for at, t in messages(sock, time.monotonic() + 10) if "WATCHDOG=1" in t]
            assert len(resumed) >= 2
            assert daemon.stdin is not None
            daemon.stdin.write(b"0012822001\n")
            daemon.stdin.flush()
            sim.wait_for_accepted(1)  # taps go through after the wedge
            daemon.terminate()
            assert daemon.wait(20) == 0
            stopping = [t for _, t in messages(sock, time.monotonic() + 2)]
            assert "STOPPING=1" in stopping
        finally:
            daemon.kill()
            daemon.wait(10)
            if daemon.stdin is not None:
                daemon.stdin.close()
