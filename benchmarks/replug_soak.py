"""Replug soak: a serial reader unplugged and plugged in again, 100 times, in a running
`gateagent run`, while a second reader keeps tapping (issue 7, "Readers").

    .venv/bin/python benchmarks/replug_soak.py [--cycles 100] [--frames 5] [--window 1.5]

The serial reader's configured path is a symlink to a pseudo-terminal, as udev's
/dev/serial/by-id links are: unplugging closes the pty (the tty hangs up) and removes
the link; plugging in makes a new pty behind the link. Each cycle:

1. plugged in: wait for `reader connected`, write `--frames` RDM6300 frames (every other
   one in the ID-12LA form with CR LF) and wait until each is logged as recorded; then
   measure the daemon's CPU for `--window` seconds, connected and idle, as the baseline;
2. write half a frame (a card pulled away mid-read) and unplug: wait for
   `reader disconnected`, then measure the daemon's CPU for `--window` seconds;
3. plug in again; the reconnect time runs until `reader connected` is logged (the
   reader retries every 1.5 s, RECONNECT_S).

All the while a thread types a card on the stdin reader every 1/--rate seconds. At the
end every card written while connected and every typed card must be in the database,
and nothing else (the half frames are not cards). CPU is the process' time on a CPU
(/proc/PID/task/*/schedstat, nanoseconds) over the window's wall time; both windows
include the other reader's taps, recorded and uploaded to the simulator.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import tty
from collections import Counter
from functools import reduce
from operator import xor
from pathlib import Path

from harness import TOKEN, Daemon, machine, write_config

from gateagent.simulator import Simulator

WAIT_S = 30.0  # safety net: each wait returns when its log line arrives


def rdm(card: str, crlf: bool) -> bytes:
    """An RDM6300 frame (ID-12LA with `crlf`) of a 10 hex digit card."""
    checksum = reduce(xor, bytes.fromhex(card))
    return b"\x02" + f"{card}{checksum:02X}".encode() + (b"\r\n" if crlf else b"") + b"\x03"


class Plug:
    """A serial reader module behind `link`: a pty pair while plugged in."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self._fds: tuple[int, int] | None = None

    def plug(self) -> None:
        master, slave = os.openpty()
        # Raw until pyserial sets it, so STX, ETX, CR and LF pass unchanged; the slave
        # stays open here so the master never sees the port closed between opens.
        tty.setraw(slave)
        self._fds = (master, slave)
        new = self.link.with_name(self.link.name + ".new")
        os.symlink(os.ttyname(slave), new)
        os.replace(new, self.link)  # atomically, as udev does

    def write(self, data: bytes) -> None:
        assert self._fds is not None
        os.write(self._fds[0], data)

    def unplug(self) -> None:
        self.link.unlink()
        assert self._fds is not None
        for fd in self._fds:
            os.close(fd)
        self._fds = None


def cpu_s(pid: int) -> float:
    """Seconds on a CPU of every thread of `pid`, to the nanosecond (clock ticks of
    /proc/PID/stat would be 0.7 % steps in a 1.5 s window)."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total_ns / 1e9


def cpu_percent(pid: int, window_s: float) -> float:
    cpu_before, before = cpu_s(pid), time.monotonic()
    time.sleep(window_s)  # the measurement itself, not a wait for something
    return 100 * (cpu_s(pid) - cpu_before) / (time.monotonic() - before)


class Tapper:
    """Types a new card on the daemon's stdin reader every `interval_s` until stopped."""

    def __init__(self, daemon: Daemon, interval_s: float) -> None:
        self.typed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(daemon, interval_s))
        self._thread.start()

    def _run(self, daemon: Daemon, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            card = f"{len(self.typed) + 1:010d}"
            daemon.type(card + "\n")
            self.typed.append(card)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--frames", type=int, default=5, help="cards written per cycle")
    parser.add_argument("--window", type=float, default=1.5, help="CPU window, seconds")
    parser.add_argument("--rate", type=float, default=2.0, help="stdin taps per second")
    args = parser.parse_args()
    serial_cards = [f"A0{n:08X}" for n in range(1, args.cycles * args.frames + 1)]
    roster = {card: f"Student {card}" for card in serial_cards}
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as name,
        Simulator(token=TOKEN, roster=roster) as sim,
    ):
        folder = Path(name)
        link = folder / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
        link.parent.mkdir(parents=True)
        readers = [
            {"name": "desk", "kind": "stdin"},
            {"name": "entrance", "kind": "serial", "path": str(link), "protocol": "rdm6300"},
        ]
        config = write_config(folder, sim.integration_url, readers)
        plug = Plug(link)
        plug.plug()
        daemon = Daemon(config)
        daemon.wait("gateagent started", timeout_s=60)
        tapper = Tapper(daemon, 1 / args.rate)
        written: list[str] = []
        reconnect_s: list[float] = []
        idle_cpu: list[float] = []
        unplugged_cpu: list[float] = []
        late: list[str] = []  # cards not recorded before the unplug (each a finding)
        plugged_at = time.monotonic()
        try:
            for cycle in range(1, args.cycles + 1):
                connected_at = daemon.wait("reader connected reader=entrance", cycle, WAIT_S)
                if cycle > 1:
                    reconnect_s.append(connected_at - plugged_at)
                cards = serial_cards[(cycle - 1) * args.frames : cycle * args.frames]
                for index, card in enumerate(cards):
                    plug.write(rdm(card, crlf=index % 2 == 1))
                written += cards
                try:
                    daemon.wait_recorded(cards, WAIT_S)
                except TimeoutError as exc:
                    late.append(f"cycle {cycle}: {exc}")
                idle_cpu.append(cpu_percent(daemon.process.pid, args.window))

                plug.write(rdm(serial_cards[0], crlf=False)[:7])
                plug.unplug()
                daemon.wait("reader disconnected reader=entrance", cycle, WAIT_S)
                unplugged_cpu.append(cpu_percent(daemon.process.pid, args.window))
                plugged_at = time.monotonic()
                plug.plug()
            daemon.wait("reader connected reader=entrance", args.cycles + 1, WAIT_S)
        finally:
            tapper.stop()
        try:
            daemon.wait_recorded(written + tapper.typed, WAIT_S)
        except TimeoutError as exc:
            late.append(f"at the end: {exc}")
        code = daemon.stop()
        plug.unplug()
        conn = sqlite3.connect(folder / "taps.db")
        rows = conn.execute("SELECT card_no, reader FROM taps ORDER BY seq").fetchall()
        conn.close()

    in_db = Counter(rows)
    expected = Counter([(card, "entrance") for card in written])
    expected.update((card, "desk") for card in tapper.typed)
    lost = expected - in_db
    unexpected = in_db - expected
    lost_serial = sum(n for (_, reader), n in lost.items() if reader == "entrance")
    lost_stdin = lost.total() - lost_serial
    print(f"machine: {machine()}")
    print(
        f"{args.cycles} unplug/replug cycles in {time.monotonic() - started:.0f} s;"
        f" daemon exit status {code}"
    )
    print(
        f"serial: {len(written)} cards written while connected,"
        f" {len(written) - lost_serial} recorded, {lost_serial} lost"
    )
    print(
        f"stdin, tapping throughout at {args.rate:g}/s: {len(tapper.typed)} typed,"
        f" {len(tapper.typed) - lost_stdin} recorded, {lost_stdin} lost"
    )
    print(f"unexpected taps in the database (e.g. from half frames): {unexpected.total()}")
    print(
        f"CPU while unplugged: mean {statistics.mean(unplugged_cpu):.2f} %,"
        f" max {max(unplugged_cpu):.2f} % ({args.window:g} s windows)"
    )
    print(
        f"CPU while connected and idle (baseline): mean {statistics.mean(idle_cpu):.2f} %,"
        f" max {max(idle_cpu):.2f} %"
    )
    if reconnect_s:
        print(
            f"reconnect (link back -> reader connected): mean {statistics.mean(reconnect_s):.2f} s,"
            f" max {max(reconnect_s):.2f} s"
        )
    for finding in late:
        print("not recorded in time:", finding)
    ok = not lost and not unexpected and not late and code == 0
    print("RESULT", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
