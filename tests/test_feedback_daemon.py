"""Feedback through `gateagent run` and `gateagent listen` (issue 15): a stdin or pty
reader, the simulator answering at once (flush_interval 0s), and the command hook
telling what the person at the gate would hear. The hook writes to a FIFO the test
reads, so the test waits on each line as it comes, never on a sleep."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from gateagent.simulator import Simulator
from tests.fakes import FakeClock
from tests.running import Run
from tests.settings import TOKEN, make_settings, write_config
from tests.test_clock_daemon import Journal, run_daemon
from tests.test_listen import frame

ROSTER = {f"{n:010d}": f"Student {n}" for n in range(1, 20)}
WAIT_S = 20.0  # safety net only

HOOK = """
import json, os, sys
line = json.dumps({k: v for k, v in os.environ.items() if k.startswith("FEEDBACK_")}) + "\\n"
with open(sys.argv[1], "w") as fifo:
    fifo.write(line)
"""


class Heard:
    """The hook's lines, read from the FIFO as they come."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        # Read-write: the open does not wait for a writer, and no EOF between commands.
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._buffer = b""

    def next(self) -> dict[str, str]:
        deadline = time.monotonic() + WAIT_S
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._fd], [], [], max(0.0, left))
            if not readable:
                raise TimeoutError(f"no feedback heard; so far {self._buffer!r}")
            self._buffer += os.read(self._fd, 4096)
        line, _, self._buffer = self._buffer.partition(b"\n")
        heard: dict[str, str] = json.loads(line)
        return heard

    def rest(self) -> list[dict[str, str]]:
        """The lines written by now, without waiting (once the writers have finished)."""
        with contextlib.suppress(BlockingIOError):
            self._buffer += os.read(self._fd, 65536)
        lines = self._buffer.splitlines()
        self._buffer = b""
        return [json.loads(line) for line in lines]

    def close(self) -> None:
        os.close(self._fd)


class SlowFactory(MockFactory):
    """gpiozero's mock pins, each open waiting until the test lets it: a pin library that
    hangs on a busy GPIO chip."""

    def __init__(self, wait_s: float = WAIT_S) -> None:
        super().__init__()
        self.wait_s = wait_s
        self.opening = threading.Event()
        self.release = threading.Event()
        self.opened = threading.Event()

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        self.opening.set()
        self.release.wait(self.wait_s)  # a safety net: a failing test still ends
        pin = super().pin(name, pin_class, **kwargs)
        self.opened.set()
        return pin


@pytest.fixture
def journal() -> Iterator[Journal]:
    handler = Journal()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, roster=ROSTER) as simulator:
        yield simulator


def test_recorded_then_the_servers_verdict_for_each_tap(tmp_path: Path, sim: Simulator) -> None:
    (tmp_path / "hook.py").write_text(HOOK)
    heard = Heard(tmp_path / "heard.fifo")
    settings = make_settings(
        tmp_path,
        sim.integration_url,
        feedback={
            "command": f"{sys.executable} {tmp_path / 'hook.py'} {tmp_path / 'heard.fifo'}",
            # Wide for a loaded test machine; the window itself is tested in
            # tests/core/test_feedback.py and tests/test_feedback.py.
            "verdict_within": "10s",
        },
    )
    run = Run(write_config(tmp_path / "config.toml", settings))
    try:
        run.wait_for_line("gateagent started")
        run.tap("0000000001")
        recorded = heard.next()
        assert (recorded["FEEDBACK_OUTCOME"], recorded["FEEDBACK_CARD_NO"]) == (
            "recorded",
            "0000000001",
        )
        verdict = heard.next()
        # PRESENT or LATE by the time of day the test runs (the simulator's rule).
        assert verdict["FEEDBACK_OUTCOME"] in ("accepted", "late")
        assert verdict["FEEDBACK_STUDENT_NAME"] == "Student 1"
        assert verdict["FEEDBACK_ATTENDANCE_STATUS"] in ("PRESENT", "LATE")

        run.tap("0000009999")  # not on the school's roster
        assert [heard.next()["FEEDBACK_OUTCOME"] for _ in range(2)] == [
            "recorded",
            "unknown-card",
        ]
        run.tap("not a card!")
        assert heard.next() == {
            "FEEDBACK_OUTCOME": "unreadable",
            "FEEDBACK_READER": "desk",
            "FEEDBACK_CARD_NO": "",
            "FEEDBACK_ATTENDANCE_STATUS": "",
            "FEEDBACK_STUDENT_NAME": "",
        }
        assert run.stop() == 0
    finally:
        heard.close()
        if run.process.poll() is None:
            run.stop()
    assert TOKEN not in run.output


def test_a_read_the_reader_drops_is_unreadable_at_the_gate(tmp_path: Path) -> None:
    (tmp_path / "hook.py").write_text(HOOK)
    heard = Heard(tmp_path / "heard.fifo")
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/x",
        feedback={"command": f"{sys.executable} {tmp_path / 'hook.py'} {tmp_path / 'heard.fifo'}"},
    )
    run = Run(write_config(tmp_path / "config.toml", settings))
    try:
        run.wait_for_line("gateagent started")
        run.tap("\x01\x02")  # not text: dropped by the reader, never reaches the recorder
        assert heard.next()["FEEDBACK_OUTCOME"] == "unreadable"
        assert run.stop() == 0
    finally:
        heard.close()
        if run.process.poll() is None:
            run.stop()
    assert "read dropped: garbage reader=desk reason=not-text" in run.output


def test_a_gpio_slow_to_open_never_delays_a_tap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: Journal
) -> None:
    factory = SlowFactory()
    monkeypatch.setattr(Device, "pin_factory", factory)  # as gpiozero picks the Pi's own
    settings = make_settings(tmp_path, "http://127.0.0.1:9/x", feedback={"buzzer_pin": 17})

    def drive(cards: queue.Queue[str]) -> None:
        assert factory.opening.wait(WAIT_S)  # the buzzer's pin is being opened, and hangs
        cards.put("0000000001")
        journal.wait_for("tap recorded card_no=0000000001")
        assert not factory.opened.is_set(), "the tap waited for the GPIO"
        factory.release.set()
        assert factory.opened.wait(WAIT_S)

    try:
        assert run_daemon(settings, FakeClock(), drive) == 0
    finally:
        factory.release.set()
        factory.reset()
    assert not [m for m in journal.messages if "feedback output unavailable" in m]


def test_listen_feedback_sounds_a_read_the_reader_drops(tmp_path: Path) -> None:
    """`listen --feedback` as a technician runs it: a frame with a failed checksum is
    unreadable at the gate, as in the daemon, and the next good card is recorded."""
    master, slave = os.openpty()
    tty.setraw(slave)
    (tmp_path / "hook.py").write_text(HOOK)
    heard = Heard(tmp_path / "heard.fifo")
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/x",
        taps={"card_format": "dec10"},
        readers=[{"name": "entrance", "kind": "serial", "path": os.ttyname(slave)}],
        feedback={"command": f"{sys.executable} {tmp_path / 'hook.py'} {tmp_path / 'heard.fifo'}"},
    )
    config = write_config(tmp_path / "config.toml", settings)
    listening = subprocess.Popen(
        [sys.executable, "-m", "gateagent", "listen", "--feedback", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stdout is not None
        assert listening.stdout.readline().startswith("listening on entrance (serial")
        # pyserial flushes what came before the open: the frames come once it is open.
        assert listening.stdout.readline() == "reader entrance: connected\n"
        good = frame("0A00C3A5F1")
        os.write(master, good[:-3] + b"00" + good[-1:])  # checksum 00, not 9D
        assert heard.next() == {
            "FEEDBACK_OUTCOME": "unreadable",
            "FEEDBACK_READER": "entrance",
            "FEEDBACK_CARD_NO": "",
            "FEEDBACK_ATTENDANCE_STATUS": "",
            "FEEDBACK_STUDENT_NAME": "",
        }
        os.write(master, good)
        recorded = heard.next()
        assert (recorded["FEEDBACK_OUTCOME"], recorded["FEEDBACK_CARD_NO"]) == (
            "recorded",
            "0012822001",
        )
        listening.send_signal(signal.SIGINT)
        assert listening.wait(WAIT_S) == 0
    finally:
        listening.kill()
        _, err = listening.communicate(timeout=10)
        heard.close()
        os.close(master)
        os.close(slave)
    assert "read dropped: garbage reader=entrance reason=bad-checksum" in err
    assert TOKEN not in err


def test_listen_sounds_each_read(tmp_path: Path) -> None:
    from gateagent.feedback import Feedback
    from gateagent.listen import listen

    master, slave = os.openpty()
    tty.setraw(slave)
    (tmp_path / "hook.py").write_text(HOOK)
    heard = Heard(tmp_path / "heard.fifo")
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/x",
        taps={"card_format": "dec10"},
        readers=[
            {"name": "entrance", "kind": "serial", "path": os.ttyname(slave), "protocol": "lines"}
        ],
        feedback={"command": f"{sys.executable} {tmp_path / 'hook.py'} {tmp_path / 'heard.fifo'}"},
    )
    feedback = Feedback(settings)
    feedback.start()
    stop = threading.Event()
    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "w")
    printed = os.fdopen(read_end)
    args = (settings.readers, "dec10", False, settings.device.tz)
    kwargs = {"out": out, "stop": stop, "feedback": feedback}
    thread = threading.Thread(target=listen, args=args, kwargs=kwargs)
    thread.start()
    try:
        assert printed.readline().startswith("listening on entrance")
        # pyserial flushes what came before the open: the card comes once it is open.
        assert printed.readline() == "reader entrance: connected\n"
        os.write(master, b"0A00C3A5F1\r\n")
        first = heard.next()
        assert (first["FEEDBACK_OUTCOME"], first["FEEDBACK_CARD_NO"]) == ("recorded", "0012822001")
        os.write(master, b"not a card!\r\n")
        assert heard.next()["FEEDBACK_OUTCOME"] == "unreadable"
    finally:
        stop.set()
        thread.join(WAIT_S)
        feedback.close()
        heard.close()
        out.close()
        printed.close()
        os.close(master)
        os.close(slave)
