"""SPEC "Time" through the daemon: the clock is a seam, the rest is real (server, SQLite)."""

from __future__ import annotations

import logging
import os
import queue
import signal
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateagent.config import Config, Reader
from gateagent.daemon import Daemon
from gateagent.readers.base import Emit, Health, Source
from gateagent.simulator import Simulator
from gateagent.store import NewTap, Store, iso
from tests.fakes import FakeClock
from tests.settings import TOKEN, make_settings

TRUE_NOW = datetime.now(UTC).replace(microsecond=0)


class QueueSource:
    """A reader whose cards a test puts in a queue."""

    def __init__(self, name: str, cards: queue.Queue[str], started: threading.Event) -> None:
        self.name = name
        self._cards = cards
        self._started = started

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        health(True, None)
        self._started.set()
        while not stop.is_set():
            try:
                card = self._cards.get(timeout=0.1)
            except queue.Empty:
                continue
            if stop.is_set():
                # Stopped (a reload restarts it) while waiting: the card is for the
                # reader that replaces this one.
                self._cards.put(card)
                return
            emit(card)


class Journal(logging.Handler):
    """The daemon's log records, as they come, for a test thread to wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.messages.append(record.getMessage())
            self._changed.notify_all()

    def wait_for(self, text: str, timeout_s: float = 20.0) -> None:
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(text in message for message in self.messages), timeout_s
            )
        assert found, f"{text!r} not logged in {timeout_s} s"


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
    with Simulator(token=TOKEN) as simulator:
        yield simulator


def run_daemon(
    settings: Config,
    clock: FakeClock,
    drive: Callable[[queue.Queue[str]], None],
    config_path: str = "(test)",
) -> int:
    """Run the daemon in this (the main) thread, as `gateagent run` does, while `drive`
    plays the world in another thread and ends it with SIGTERM."""
    cards: queue.Queue[str] = queue.Queue()
    failures: list[BaseException] = []
    # Readers start after the daemon's signal handlers are in place: only then may the
    # driver end it with SIGTERM (before, the signal would end pytest itself).
    started = threading.Event()

    def driver() -> None:
        try:
            assert started.wait(30), "the daemon did not start its readers"
            drive(cards)
        except BaseException as exc:
            failures.append(exc)
        finally:
            if started.is_set():
                os.kill(os.getpid(), signal.SIGTERM)

    def sources(reader: Reader) -> Source:
        return QueueSource(reader.name, cards, started)

    thread = threading.Thread(target=driver)
    thread.start()
    code = Daemon(config_path, settings, clock, sources=sources).run()
    thread.join(30)
    if failures:
        raise failures[0]
    return code


def rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT card_no, state, reason, checktype, tapped_at, recorded_at, clock_synced"
            " FROM taps ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


def test_taps_are_held_until_the_clock_synchronizes_then_corrected(
    tmp_path: Path, sim: Simulator, journal: Journal
) -> None:
    # The Pi lost power: the clock restarted from the last saved time, a day behind.
    behind = TRUE_NOW - timedelta(days=1)
    clock = FakeClock(wall=behind, mono=1000.0, synced=False)
    settings = make_settings(tmp_path, sim.integration_url, device={"require_clock_sync": True})

    def drive(cards: queue.Queue[str]) -> None:
        cards.put("0012822001")
        journal.wait_for("tap recorded card_no=0012822001")
        clock.advance(30)
        cards.put("0006762840")
        journal.wait_for("tap recorded card_no=0006762840")
        assert [row[1:3] for row in rows(settings.storage.path)] == [
            ("held", "clock-unsynchronized"),
            ("held", "clock-unsynchronized"),
        ]
        assert sim.received == []  # never sent with a time that may be wrong
        # 60 s later NTP answers: the wall clock jumps to the true time.
        clock.advance(60)
        clock.set_wall(TRUE_NOW)
        clock.synced = True
        sim.wait_for_accepted(2, timeout_s=20)

    assert run_daemon(settings, clock, drive) == 0
    sent = {str(r.body["card_no"]): str(r.body["tanggal"]) for r in sim.accepted()}
    assert sent == {
        "0012822001": iso(TRUE_NOW - timedelta(seconds=90)),
        "0006762840": iso(TRUE_NOW - timedelta(seconds=60)),
    }
    stored = rows(settings.storage.path)
    assert [row[1] for row in stored] == ["delivered", "delivered"]
    assert stored[0][5] == iso(behind)  # recorded_at keeps the wall clock's own reading
    assert stored[0][6] == 0


def test_held_taps_of_an_earlier_boot_become_clock_unknown(
    tmp_path: Path, sim: Simulator, journal: Journal
) -> None:
    settings = make_settings(tmp_path, sim.integration_url, device={"require_clock_sync": True})
    store = Store.open(settings.storage.path)
    store.record(
        NewTap(
            str(uuid.uuid4()), "0012822001", "desk", None, "auto", TRUE_NOW, 5.0, "old-boot", False
        ),
        settings.device.tz,
        600.0,
        hold=True,
    )
    store.close()
    clock = FakeClock(wall=TRUE_NOW, synced=True)

    def drive(cards: queue.Queue[str]) -> None:
        journal.wait_for("held taps of an earlier boot cannot be corrected")

    assert run_daemon(settings, clock, drive) == 0
    assert rows(settings.storage.path)[0][1:3] == ("held", "clock-unknown")
    assert sim.received == []
    assert any("clock-unknown" in message for message in journal.messages)


def test_without_require_clock_sync_taps_are_sent_at_once(tmp_path: Path, sim: Simulator) -> None:
    clock = FakeClock(wall=TRUE_NOW, synced=False)
    settings = make_settings(tmp_path, sim.integration_url)  # require_clock_sync = false

    def drive(cards: queue.Queue[str]) -> None:
        cards.put("0012822001")
        sim.wait_for_accepted(1)

    assert run_daemon(settings, clock, drive) == 0
    assert rows(settings.storage.path)[0][1] == "delivered"
