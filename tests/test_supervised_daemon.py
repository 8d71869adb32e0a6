"""The daemon in this process (clock and readers as seams, SQLite and the server real)
under the faults of issue 11: store errors in housekeeping and in a reload, held taps
left by an earlier process of this boot, a database unusable at start."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import uuid
from pathlib import Path

import pytest

from gateagent import daemon as daemon_module
from gateagent import recorder as recorder_module
from gateagent.errors import DiskFull, StoreError
from gateagent.simulator import Simulator
from gateagent.store import NewTap, Store
from tests.fakes import FakeClock
from tests.settings import make_settings, write_config
from tests.test_clock_daemon import TRUE_NOW, Journal, journal, run_daemon, sim

__all__ = ["journal", "sim"]  # fixtures used here


def taps(path: Path) -> list[tuple[str, str, int | None]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT card_no, state, checktype FROM taps ORDER BY seq").fetchall()
    finally:
        conn.close()


def test_housekeeping_survives_store_errors_and_sigterm_still_exits_0(
    tmp_path: Path, sim: Simulator, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11, item 1: one DiskFull in housekeeping ended it, and stop then raised it.
    monkeypatch.setattr(daemon_module, "HOUSEKEEPING_S", 0.05)
    settings = make_settings(tmp_path, sim.integration_url)
    clock = FakeClock(wall=TRUE_NOW)

    def drive(cards: queue.Queue[str]) -> None:
        journal.wait_for("gateagent started")

        def full(*args: object) -> None:
            raise DiskFull("the disk of taps.db is full")

        monkeypatch.setattr(Store, "set_reader", full)
        monkeypatch.setattr(Store, "purge", full)
        monkeypatch.setattr(Store, "counts", full)
        cards.put("0012822001")
        journal.wait_for("tap recorded card_no=0012822001")
        clock.synced = False  # a clock change to publish, through the failing store too
        journal.wait_for("the disk of taps.db is full")
        cards.put("0006762840")  # readers and recording go on meanwhile
        journal.wait_for("tap recorded card_no=0006762840")

    assert run_daemon(settings, clock, drive) == 0
    assert [card for card, _, _ in taps(settings.storage.path)] == ["0012822001", "0006762840"]
    # Once per reporter (housekeeping, the status publisher, the metrics, the last state
    # at stop), then summarised: not a line per failed tick.
    assert sum("the disk of taps.db is full" in m for m in journal.messages) <= 4


def test_a_reload_whose_writes_fail_is_retried_and_leaves_no_reader_stopped(
    tmp_path: Path, sim: Simulator, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11, item 2: readers were stopped first, then forget_readers raised on a
    # locked database, and the new readers never started.
    path = tmp_path / "config.toml"
    settings = make_settings(tmp_path, sim.integration_url)
    write_config(path, settings)
    clock = FakeClock(wall=TRUE_NOW)
    forget = Store.forget_readers
    failures = 0

    def locked(store: Store, keep: object) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise StoreError("cannot write the readers in taps.db: database is locked")
        forget(store, keep)  # type: ignore[arg-type]

    def drive(cards: queue.Queue[str]) -> None:
        journal.wait_for("gateagent started")
        monkeypatch.setattr(Store, "forget_readers", locked)
        # The desk reader becomes a fixed "out" reader: it is restarted by the reload.
        write_config(
            path,
            make_settings(
                tmp_path,
                sim.integration_url,
                readers=[{"name": "desk", "kind": "stdin", "direction": "out"}],
            ),
        )
        os.kill(os.getpid(), signal.SIGHUP)
        journal.wait_for("new configuration waits for the database")
        cards.put("0012822001")  # the running configuration reads meanwhile
        journal.wait_for("tap recorded card_no=0012822001 reader=desk checktype=1")
        journal.wait_for("configuration reloaded")
        cards.put("0006762840")  # and the new one once it is applied
        journal.wait_for("tap recorded card_no=0006762840 reader=desk checktype=2")

    assert run_daemon(settings, clock, drive, config_path=str(path)) == 0
    assert failures == 2


def test_held_taps_of_an_earlier_process_are_released_before_the_next_tap(
    tmp_path: Path, sim: Simulator, journal: Journal
) -> None:
    # Issue 11, item 3: only housekeeping released them, up to 5 s after the sync; a
    # tap in that window got a second check-in, delivered before the first.
    settings = make_settings(tmp_path, sim.integration_url, device={"require_clock_sync": True})
    clock = FakeClock(wall=TRUE_NOW, synced=False)
    store = Store.open(settings.storage.path)
    store.record(
        NewTap(str(uuid.uuid4()), "0012822001", "desk", None, "auto", TRUE_NOW, clock.mono,
               clock.boot, False),
        settings.device.tz,
        settings.taps.min_checkout_after,
        hold=True,
    )  # fmt: skip
    store.close()

    def drive(cards: queue.Queue[str]) -> None:
        journal.wait_for("gateagent started")
        clock.advance(settings.taps.min_checkout_after + recorder_module.SYNC_CHECK_S + 1)
        clock.synced = True
        cards.put("0012822001")
        journal.wait_for("tap recorded card_no=0012822001")
        sim.wait_for_accepted(2)

    assert run_daemon(settings, clock, drive) == 0
    assert taps(settings.storage.path) == [
        ("0012822001", "delivered", 1),
        ("0012822001", "delivered", 2),
    ]
    order = [(str(r.body["card_no"]), r.body["checktype"]) for r in sim.accepted()]
    assert order == [("0012822001", 1), ("0012822001", 2)]


def test_the_daemon_reads_while_the_database_cannot_be_opened_and_records_later(
    tmp_path: Path, sim: Simulator, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "READY_WAIT_S", 0.2)
    # Issue 11, item 1 (start): `run` exited 1 and systemd restarted it every 5 s, so
    # taps presented meanwhile were neither recorded nor kept.
    blocked = tmp_path / "state"
    blocked.write_text("a file where the database's folder should be")
    settings = make_settings(
        tmp_path, sim.integration_url, storage={"path": str(blocked / "taps.db")}
    )
    clock = FakeClock(wall=TRUE_NOW)

    def drive(cards: queue.Queue[str]) -> None:
        journal.wait_for("tap database cannot be used")
        cards.put("0012822001")
        cards.put("0006762840")
        journal.wait_for("gateagent started")
        blocked.unlink()  # a technician fixes it: the folder can be made now
        journal.wait_for("tap database open")
        journal.wait_for("tap recorded card_no=0006762840")
        sim.wait_for_accepted(2)

    assert run_daemon(settings, clock, drive) == 0
    assert [m for m in journal.messages if "tap database cannot be used" in m][:1]
    assert taps(settings.storage.path) == [
        ("0012822001", "delivered", 1),
        ("0006762840", "delivered", 1),
    ]
