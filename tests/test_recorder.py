"""The recorder against a real SQLite file: its writer thread commits in read order,
reports each tap back on the loop, drains at close, and says when it is stuck."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from gateagent import recorder as recorder_module
from gateagent.config import Config
from gateagent.recorder import Recorder
from gateagent.store import Store, Tap
from tests.fakes import FakeClock
from tests.settings import make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Config:
    settings = make_settings(
        tmp_path, "http://127.0.0.1:9/", taps={"debounce": "0s", "min_checkout_after": "0s"}
    )
    Store.open(settings.storage.path).close()  # as the daemon does before the recorder
    return settings


def committed(settings: Config) -> list[str]:
    conn = sqlite3.connect(settings.storage.path)
    try:
        return [row[0] for row in conn.execute("SELECT card_no FROM taps ORDER BY seq")]
    finally:
        conn.close()


def test_taps_are_committed_in_read_order_and_reported_on_the_loop(settings: Config) -> None:
    cards = [f"{n % 7 + 1:010d}" for n in range(60)]
    reported: list[Tap] = []

    async def scenario() -> None:
        all_in = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_recorded(tap: Tap) -> None:
            assert asyncio.get_running_loop() is loop  # never called from the writer thread
            reported.append(tap)
            if len(reported) == len(cards):
                all_in.set()

        clock = FakeClock()
        recorder = Recorder(settings.storage.path, settings, clock, on_recorded)
        recorder.start()
        for card in cards:
            clock.advance(1)
            assert recorder.read(settings.readers[0], card)
        await asyncio.wait_for(all_in.wait(), 20)
        assert recorder.unsaved == 0
        await recorder.close()

    asyncio.run(scenario())
    assert [tap.card_no for tap in reported] == cards
    assert committed(settings) == cards
    # The writer decides directions from the taps committed before: first in, then out.
    assert [tap.checktype for tap in reported[:7]] == [1] * 7
    assert [tap.checktype for tap in reported[7:14]] == [2] * 7


def test_close_commits_every_tap_read_before_it(settings: Config) -> None:
    cards = [f"{n:010d}" for n in range(1, 41)]

    async def scenario() -> None:
        clock = FakeClock()
        recorder = Recorder(settings.storage.path, settings, clock)
        recorder.start()
        for card in cards:
            clock.advance(1)
            recorder.read(settings.readers[0], card)
        await recorder.close()
        assert recorder.unsaved == 0
        assert not recorder.read(settings.readers[0], "0000000099")  # closed: not taken

    asyncio.run(scenario())
    assert committed(settings) == cards


def test_tap_ids_are_random_uuids_as_uuid_writes_them(settings: Config) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        recorder = Recorder(settings.storage.path, settings, clock)
        recorder.start()
        for n in range(200):
            clock.advance(1)
            recorder.read(settings.readers[0], f"{n + 1:010d}")
        await recorder.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(settings.storage.path)
    try:
        tap_ids = [row[0] for row in conn.execute("SELECT tap_id FROM taps")]
    finally:
        conn.close()
    assert len(set(tap_ids)) == 200
    for tap_id in tap_ids:
        parsed = uuid.UUID(tap_id)
        assert (str(parsed), parsed.version, parsed.variant) == (tap_id, 4, uuid.RFC_4122)
    # 122 random bits: every hex digit outside the version and variant shows up
    # everywhere (a digit stuck at one value would be a broken generator).
    for position in set(range(36)) - {8, 13, 14, 18, 19, 23}:
        assert len({tap_id[position] for tap_id in tap_ids}) > 8, position


def test_garbage_and_repeats_never_reach_the_writer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:9/")
    Store.open(settings.storage.path).close()

    async def scenario() -> None:
        recorder = Recorder(settings.storage.path, settings, FakeClock())
        recorder.start()
        reader = settings.readers[0]
        assert not recorder.read(reader, "0000000000")  # all zeros: no card has it
        assert recorder.read(reader, "0012822001")
        assert not recorder.read(reader, "0012822001")  # the same presentation (debounce)
        await recorder.close()

    asyncio.run(scenario())
    assert committed(settings) == ["0012822001"]


def test_a_writer_stuck_in_one_commit_is_not_alive(
    settings: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "STUCK_S", 0.2)
    blocker = sqlite3.connect(settings.storage.path, isolation_level=None)

    async def scenario() -> None:
        done = asyncio.Event()
        recorder = Recorder(settings.storage.path, settings, FakeClock(), lambda tap: done.set())
        recorder.start()
        assert recorder.alive()
        # Another process holds the write lock: the commit waits in SQLite's busy handler.
        blocker.execute("BEGIN IMMEDIATE")
        recorder.read(settings.readers[0], "0012822001")
        deadline = time.monotonic() + 5
        while recorder.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # alive() is polled, as the watchdog tick does
        assert not recorder.alive()
        blocker.execute("COMMIT")
        await asyncio.wait_for(done.wait(), 20)
        assert recorder.alive()
        await recorder.close()

    try:
        asyncio.run(scenario())
    finally:
        blocker.close()
    assert committed(settings) == ["0012822001"]


def test_reads_from_several_reader_threads_are_all_recorded_in_each_readers_order(
    settings: Config,
) -> None:
    readers = [settings.readers[0].model_copy(update={"name": f"r{n}"}) for n in range(3)]
    per_reader = 40

    async def scenario() -> None:
        done = asyncio.Event()
        count = 0

        def on_recorded(tap: Tap) -> None:
            nonlocal count
            count += 1
            if count == per_reader * len(readers):
                done.set()

        recorder = Recorder(settings.storage.path, settings, FakeClock(), on_recorded)
        recorder.start()

        def tap_all(index: int) -> None:
            for n in range(per_reader):
                # Distinct cards: the shared debouncer must not merge them.
                assert recorder.read(readers[index], f"{index + 1:02d}{n + 1:08d}")

        threads = [threading.Thread(target=tap_all, args=(i,)) for i in range(len(readers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        await asyncio.wait_for(done.wait(), 20)
        assert recorder.unsaved == 0
        await recorder.close()

    asyncio.run(scenario())
    conn = sqlite3.connect(settings.storage.path)
    try:
        rows = conn.execute("SELECT reader, card_no FROM taps ORDER BY seq").fetchall()
    finally:
        conn.close()
    for index, reader in enumerate(readers):
        cards = [card for name, card in rows if name == reader.name]
        assert cards == [f"{index + 1:02d}{n + 1:08d}" for n in range(per_reader)]


def test_an_unexpected_error_in_a_commit_is_logged_and_the_tap_tried_again(
    settings: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    record = Store.record
    calls = 0

    def failing_once(store: Store, *args: object) -> Tap:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug")
        return record(store, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "record", failing_once)
    monkeypatch.setattr(recorder_module, "RETRY_S", 0.05)

    async def scenario() -> None:
        done = asyncio.Event()
        recorder = Recorder(settings.storage.path, settings, FakeClock(), lambda tap: done.set())
        recorder.start()
        recorder.read(settings.readers[0], "0012822001")
        await asyncio.wait_for(done.wait(), 20)
        assert recorder.alive()
        await recorder.close()

    asyncio.run(scenario())
    assert committed(settings) == ["0012822001"]
    assert "ValueError: a bug: taps kept in memory and retried" in caplog.text


def test_held_taps_are_released_before_the_first_tap_after_the_clock_synchronized(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/",
        device={"require_clock_sync": True},
        taps={"debounce": "0s", "min_checkout_after": "0s"},
    )
    Store.open(settings.storage.path).close()
    released: list[int] = []
    recorded: list[Tap] = []

    async def scenario() -> None:
        clock = FakeClock(synced=False)
        two = asyncio.Event()

        def on_recorded(tap: Tap) -> None:
            recorded.append(tap)
            if len(recorded) == 2:
                two.set()

        recorder = Recorder(
            settings.storage.path, settings, clock, on_recorded, on_released=released.append
        )
        recorder.start()
        reader = settings.readers[0]
        recorder.read(reader, "0012822001")  # held: the clock is not synchronized
        clock.advance(recorder_module.SYNC_CHECK_S + 1)
        clock.synced = True
        recorder.read(reader, "0012822001")  # the same card, after the sync
        await asyncio.wait_for(two.wait(), 20)
        await recorder.close()

    asyncio.run(scenario())
    assert [tap.state for tap in recorded] == ["held", "pending"]
    assert released == [1]
    # The held tap, released first, is the day's check-in; the later one checks out.
    assert recorded[1].checktype == 2
