"""The uploader against a real HTTP server on 127.0.0.1 (the simulator), real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateagent import store as store_module
from gateagent.core import schedule as schedule_module
from gateagent.core.schedule import FINISH_S
from gateagent.simulator import Simulator
from gateagent.store import Store
from gateagent.uplink import client as client_module
from gateagent.uplink.client import Uploader
from tests.settings import TOKEN, make_settings
from tests.uplink.uploading import NOW, eventually, record, settled, states, uploading

ROSTER = {f"{n:010d}": f"Student {n}" for n in range(1, 30)}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN, roster=ROSTER) as simulator:
        yield simulator


def test_integration_payload_and_delivery(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)

    def taps(store: Store) -> None:
        record(store, settings, "0000000001")
        record(store, settings, "0000000001", NOW + timedelta(hours=8))
        record(store, settings, "0000000002", direction="out")

    asyncio.run(uploading(settings, settled(settings, 3), before=taps))
    bodies = sorted((r.body for r in sim.accepted()), key=lambda b: (b["card_no"], b["checktype"]))
    tanggal = NOW.strftime("%Y-%m-%dT%H:%M:%S.123Z")
    assert bodies[0] == {
        "gate": 4,
        "card_no": "0000000001",
        "tanggal": tanggal,
        "token": TOKEN,
        "checktype": 1,
    }
    assert bodies[1]["checktype"] == 2
    assert bodies[1]["tanggal"] == (NOW + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S.123Z")
    assert bodies[2]["checktype"] == 2
    rows = states(settings)
    assert [row[2] for row in rows] == ["delivered"] * 3
    assert rows[0][4] == "Student 1"
    assert rows[0][5] in ("PRESENT", "LATE")


@pytest.mark.parametrize(
    ("card_no", "fault", "state", "reason"),
    [
        ("0000099999", None, "rejected", "unknown-card"),
        (
            "0000000001",
            (400, {"statusCode": 400, "message": "Cannot add attendance for tomorrow onwards"}),
            "rejected",
            "future-date",
        ),
        ("0000000001", (422, {"message": "card_no too long"}), "rejected", "http-422"),
        ("0000000001", (500, None), "delivered", None),
        ("0000000001", (502, b"<html>bad gateway</html>"), "delivered", None),
        ("0000000001", (503, None), "delivered", None),
        ("0000000001", (408, None), "delivered", None),
        ("0000000001", (429, None), "delivered", None),
    ],
    ids=["unknown-card", "future-date", "other-4xx", "500", "502-html", "503", "408", "429"],
)
def test_integration_answers(
    tmp_path: Path,
    sim: Simulator,
    card_no: str,
    fault: tuple[int, object] | None,
    state: str,
    reason: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A 502 is retried only once its attempt can have ended on the server (timeout + margin).
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "1s", "ambiguous_margin": "0s"}
    )
    if fault is not None:
        sim.fail_next(2, fault[0], body=fault[1])
    asyncio.run(
        uploading(settings, settled(settings, 1), before=lambda s: record(s, settings, card_no))
    )
    [row] = states(settings)
    assert (row[2], row[3]) == (state, reason)
    if reason == "future-date":
        assert any("clock is ahead" in r.getMessage() for r in caplog.records)


def test_retry_after_is_honoured(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    sim.fail_next(1, 429, retry_after="1")
    asyncio.run(
        uploading(
            settings, settled(settings, 1), before=lambda s: record(s, settings, "0000000001")
        )
    )
    first, second = sim.received
    assert first.status == 429
    assert second.status == 200
    assert second.at_mono - first.at_mono >= 1.0


def test_timeouts_and_dropped_connections_are_retried(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "200ms", "ambiguous_margin": "0s"}
    )
    sim.stall_next(1, 1.0)
    sim.drop_next(1)

    def taps(store: Store) -> None:
        record(store, settings, "0000000001")
        record(store, settings, "0000000002")

    asyncio.run(uploading(settings, settled(settings, 2), before=taps))
    assert [row[2] for row in states(settings)] == ["delivered", "delivered"]


def test_wrong_token_pauses_and_resumes_by_itself(
    tmp_path: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = make_settings(tmp_path, sim.integration_url)
    sim.token = "the-server-changed-it"
    seen: list[str] = []

    async def fix_token_later(store: Store, uploader: Uploader) -> None:
        # The three taps go at once; the 4th request is a probe, sent once paused.
        await asyncio.to_thread(sim.wait_for, 4)
        seen.append(uploader.state)
        assert states(settings)[0][2] == "pending"  # nothing lost while paused
        sim.token = TOKEN

    def taps(store: Store) -> None:
        for n in range(1, 4):
            record(store, settings, f"{n:010d}")

    asyncio.run(uploading(settings, settled(settings, 3), before=taps, during=fix_token_later))
    assert seen == ["paused-auth"]
    assert [row[2] for row in states(settings)] == ["delivered"] * 3
    paused_lines = [r for r in caplog.records if "paused-auth" in r.getMessage()]
    assert len(paused_lines) == 1  # logged once, not once per probe
    assert any(r.getMessage().startswith("uplink ok again") for r in caplog.records)


def test_wrong_gate_pauses_config(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    sim.gates = {7}
    seen: list[str] = []

    async def fix_gate_later(store: Store, uploader: Uploader) -> None:
        await asyncio.to_thread(sim.wait_for, 2)
        seen.append(uploader.state)
        sim.gates = {4}

    asyncio.run(
        uploading(
            settings,
            settled(settings, 1),
            before=lambda s: record(s, settings, "0000000001"),
            during=fix_gate_later,
        )
    )
    assert seen == ["paused-config"]
    assert states(settings)[0][2] == "delivered"


def test_per_card_order_and_other_cards_not_held_up(tmp_path: Path, sim: Simulator) -> None:
    # One request at a time makes the order of arrivals the order of decisions.
    settings = make_settings(tmp_path, sim.integration_url, uplink={"concurrency": 1})
    sim.fail_next(1, 503)

    def taps(store: Store) -> None:
        record(store, settings, "0000000001")  # A1: fails once
        record(store, settings, "0000000002")  # B1
        record(store, settings, "0000000001", NOW + timedelta(hours=8))  # A2

    asyncio.run(uploading(settings, settled(settings, 3), before=taps))
    order = [(r.body["card_no"], r.body["checktype"]) for r in sim.accepted()]
    # B is not held up by A's retry, and A2 never overtakes A1.
    assert order == [("0000000002", 1), ("0000000001", 1), ("0000000001", 2)]


def test_server_down_then_up_delivers_everything(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    sim.down()

    async def outage(store: Store, uploader: Uploader) -> None:
        for n in range(1, 11):
            uploader.wake(record(store, settings, f"{n:010d}"))
        # However slow the machine: the first refusals are seen before the server is back.
        await eventually(lambda: uploader.state == "retrying")
        sim.up()

    asyncio.run(uploading(settings, settled(settings, 10), during=outage))
    assert [row[2] for row in states(settings)] == ["delivered"] * 10
    assert len(sim.accepted()) == 10


def test_answers_that_cannot_be_written_are_kept_and_their_card_waits(
    tmp_path: Path,
    sim: Simulator,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path, sim.integration_url)
    blocker = sqlite3.connect(settings.storage.path, isolation_level=None)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.05)  # fail fast while locked

    def two_taps_of_one_card(store: Store) -> None:
        record(store, settings, "0000000001")
        record(store, settings, "0000000001", at=NOW + timedelta(hours=9))
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def locked(store: Store, uploader: Uploader) -> None:
        deadline = asyncio.get_running_loop().time() + 20
        while "answers kept and written again" not in caplog.text:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        # The first answer is not in the database: the card's next tap waits for it.
        assert len(sim.received) == 1
        blocker.execute("COMMIT")

    try:
        asyncio.run(
            uploading(settings, settled(settings, 2), before=two_taps_of_one_card, during=locked)
        )
    finally:
        blocker.close()
    assert [row[2] for row in states(settings)] == ["delivered", "delivered"]
    assert len(sim.accepted()) == 2


def test_flush_interval_zero_is_woken_by_recording(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url)

    async def tap_later(store: Store, uploader: Uploader) -> None:
        await asyncio.sleep(0.05)
        uploader.wake(record(store, settings, "0000000001"))
        await asyncio.to_thread(sim.wait_for_accepted, 1, 5.0)

    asyncio.run(uploading(settings, settled(settings, 1), during=tap_later))


def test_flush_interval_waits(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.integration_url, uplink={"flush_interval": "1h"})

    async def tap_later(store: Store, uploader: Uploader) -> None:
        await asyncio.sleep(0.05)
        uploader.wake(record(store, settings, "0000000001"))
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(sim.wait_for, 1, 0.5)
        uploader.reconfigure(make_settings(tmp_path, sim.integration_url))

    asyncio.run(uploading(settings, settled(settings, 1), during=tap_later))


def test_absensi_profile(tmp_path: Path, sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(
        tmp_path, sim.absensi_url, uplink={"profile": "absensi", "flush_interval": "1h"}
    )

    def taps(store: Store) -> None:
        record(store, settings, "0000000001", NOW - timedelta(minutes=5))
        record(store, settings, "0000099999")
        record(store, settings, "0000000001", NOW + timedelta(hours=8))

    asyncio.run(uploading(settings, settled(settings, 3), before=taps))
    assert [r.body for r in sim.received] == [
        {"rfid": "0000000001"},
        {"rfid": "0000099999"},
        {"rfid": "0000000001"},
    ] or sorted(r.body["rfid"] for r in sim.received) == ["0000000001", "0000000001", "0000099999"]
    rows = states(settings)
    assert [(row[2], row[3], row[4]) for row in rows] == [
        ("delivered", None, "Student 1"),
        ("rejected", "unknown-card", None),
        ("delivered", None, "Student 1"),
    ]
    assert any("delivered late" in r.getMessage() for r in caplog.records)


def test_webhook_profile(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(
        tmp_path,
        sim.webhook_in_url,
        uplink={
            "profile": "webhook",
            "auth": "bearer",
            "webhook": {
                "url_out": sim.webhook_out_url,
                "encoding": "form",
                "fields": {"card_no": "card_no", "at": "tapped_at", "where": "device"},
            },
        },
    )

    def taps(store: Store) -> None:
        record(store, settings, "0000000001")
        record(store, settings, "0000000001", NOW + timedelta(hours=8))
        record(store, settings, "0000000002", direction="in")
        record(store, settings, "0000000002", NOW + timedelta(minutes=1), direction="in")

    asyncio.run(uploading(settings, settled(settings, 4), before=taps))
    received = {(r.path, r.body["card_no"], r.status) for r in sim.received}
    assert ("/webhook/check-in", "0000000001", 201) in received
    assert ("/webhook/check-out", "0000000001", 200) in received
    assert ("/webhook/check-in", "0000000002", 409) in received  # already checked in
    first = sim.received[0]
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.body["where"] == "gate-test"
    assert first.body["at"].endswith("Z")
    assert len(first.headers["idempotency-key"]) == 36
    rows = states(settings)
    assert [(row[2], row[3]) for row in rows] == [
        ("delivered", None),
        ("delivered", None),
        ("delivered", None),
        ("delivered", "duplicate"),
    ]


def test_webhook_api_key_and_status_map(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(
        tmp_path,
        sim.webhook_in_url,
        uplink={
            "profile": "webhook",
            "auth": "x-api-key",
            "webhook": {"statuses": {"409": "rejected"}},
        },
    )

    def taps(store: Store) -> None:
        record(store, settings, "0000000002", direction="in")
        record(store, settings, "0000000002", NOW + timedelta(minutes=1), direction="in")

    asyncio.run(uploading(settings, settled(settings, 2), before=taps))
    assert sim.received[0].headers["x-api-key"] == TOKEN
    assert [(row[2], row[3]) for row in states(settings)] == [
        ("delivered", None),
        ("rejected", "http-409"),
    ]


def test_token_never_logged(
    tmp_path: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "200ms", "ambiguous_margin": "0s"}
    )
    sim.token = "other"
    sim.fail_next(1, 500, body={"message": f"echoing {TOKEN}"})
    sim.drop_next(1)
    sim.stall_next(1, 1.0)

    async def fix(store: Store, uploader: Uploader) -> None:
        await asyncio.to_thread(sim.wait_for, 5)
        sim.token = TOKEN

    asyncio.run(
        uploading(
            settings,
            settled(settings, 1),
            before=lambda s: record(s, settings, "0000000001"),
            during=fix,
        )
    )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "paused-auth" in text
    assert "echoing ***" in text  # the server echoed our token in an error
    assert TOKEN not in text
    conn = sqlite3.connect(settings.storage.path)
    try:
        dumped = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert TOKEN not in dumped


@pytest.mark.parametrize(
    ("profile", "fault", "state", "reason"),
    [
        (
            "absensi",
            (400, {"statusCode": 400, "error": "RFID tidak boleh kosong"}),
            "rejected",
            "invalid",
        ),
        (
            "absensi",
            (500, {"statusCode": 500, "error": "Terjadi kesalahan server."}),
            "delivered",
            None,
        ),
        ("webhook", (422, {"message": "note too long"}), "rejected", "http-422"),
        ("webhook", (503, None), "delivered", None),
        ("webhook", (403, {"message": "payroll period locked"}), "delivered", None),
    ],
    ids=["absensi-400", "absensi-500", "webhook-rejected", "webhook-transient", "webhook-auth"],
)
def test_other_profiles_answers(
    tmp_path: Path,
    sim: Simulator,
    profile: str,
    fault: tuple[int, object],
    state: str,
    reason: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = sim.absensi_url if profile == "absensi" else sim.webhook_in_url
    settings = make_settings(tmp_path, url, uplink={"profile": profile, "auth": "bearer"})
    sim.fail_next(1, fault[0], body=fault[1])
    asyncio.run(
        uploading(
            settings, settled(settings, 1), before=lambda s: record(s, settings, "0000000001")
        )
    )
    [row] = states(settings)
    assert (row[2], row[3]) == (state, reason)
    # What needs attention (journalctl -p warning); the info lines depend on the level
    # logging was left at by other tests.
    uplink = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("uplink ") and r.levelno >= logging.WARNING
    ]
    if fault[0] == 403:  # the webhook default map: 401/403 = auth
        assert uplink == ["uplink paused-auth: payroll period locked"]
    elif state == "delivered":
        assert uplink[0].startswith("uplink retrying: http-")


def test_a_stop_does_not_wait_for_a_request_that_hangs(tmp_path: Path, sim: Simulator) -> None:
    # Issue 11 item 5: SIGTERM waited for the slowest request (23 s seen).
    # One slot: the second tap waits for it while the first request hangs.
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "60s", "concurrency": 1}
    )
    sim.stall_next(1, 30.0)

    async def stop_while_it_hangs() -> float:
        store = Store.open(settings.storage.path)
        record(store, settings, "0000000001")
        record(store, settings, "0000000002")
        store.close()
        uploader = Uploader(settings.storage.path, settings, rng=random.Random(1))
        stopping = asyncio.Event()
        task = asyncio.ensure_future(uploader.run(stopping))
        await asyncio.to_thread(sim.wait_for_arrived, 1)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        stopping.set()
        await asyncio.wait_for(task, timeout=FINISH_S + 5.0)
        return loop.time() - stopped_at

    assert asyncio.run(stop_while_it_hangs()) <= FINISH_S + 1.0
    assert [row[2] for row in states(settings)] == ["pending"] * 2  # sent again next time


def test_a_504_is_not_retried_while_the_server_may_still_run_it(
    tmp_path: Path, sim: Simulator
) -> None:
    # Issue 11 item 9: nginx gave up (504) while the API still worked on the request;
    # a retry a second later made a second check-in.
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "500ms", "ambiguous_margin": "700ms"}
    )
    sim.fail_next(1, 504, body="<html><title>504 Gateway Time-out</title></html>")
    asyncio.run(
        uploading(
            settings, settled(settings, 1), before=lambda s: record(s, settings, "0000000001")
        )
    )
    first, second = sim.received
    assert (first.status, second.status) == (504, 200)
    assert second.at_mono - first.at_mono >= 1.2  # timeout + ambiguous_margin


def test_a_failure_of_our_own_is_accounted_not_repeated_at_once(
    tmp_path: Path,
    sim: Simulator,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 11 item 8: an exception in a request task killed it before its outcome was
    # accounted; the same tap went out on every sweep with no backoff.
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "200ms", "ambiguous_margin": "0s"}
    )
    failures = iter([RuntimeError("a bug in building the request")])
    real_build = client_module.build

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        if (error := next(failures, None)) is not None:
            raise error
        return real_build(*args, **kwargs)

    monkeypatch.setattr(client_module, "build", failing_once)
    asyncio.run(
        uploading(
            settings, settled(settings, 1), before=lambda s: record(s, settings, "0000000001")
        )
    )
    assert len(sim.received) == 1
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in tracebacks] == ["sending a tap failed"]
    conn = sqlite3.connect(settings.storage.path)
    try:
        assert conn.execute("SELECT state, attempts FROM taps").fetchall() == [("delivered", 2)]
    finally:
        conn.close()


def test_a_reload_gives_new_requests_a_new_client(tmp_path: Path, sim: Simulator) -> None:
    # Issue 11 item 7: `reconfigure` kept the HTTP client, so a new concurrency did not
    # take effect (its pool still held one connection).
    settings = make_settings(tmp_path, sim.integration_url, uplink={"concurrency": 1})

    async def three_at_once(store: Store, uploader: Uploader) -> None:
        uploader.wake(record(store, settings, "0000000009"))
        await asyncio.to_thread(sim.wait_for_accepted, 1)  # the first client is in use
        uploader.reconfigure(
            make_settings(tmp_path, sim.integration_url, uplink={"concurrency": 3})
        )
        sim.stall_next(3, 5.0)
        for n in range(1, 4):
            uploader.wake(record(store, settings, f"{n:010d}"))
        # All three arrive while the first still stalls: three connections at once.
        await asyncio.to_thread(sim.wait_for_arrived, 4, 4.5)

    asyncio.run(uploading(settings, settled(settings, 4), during=three_at_once))


def test_a_restarted_run_does_not_resend_a_request_the_server_may_still_run(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14 item 1: the supervisor's new run sent a request abandoned by the failed
    # run again at once, while the server might still be running it (two check-ins).
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "2s", "ambiguous_margin": "1s"}
    )
    sim.stall_next(1, 10.0)
    real_page = client_module._page
    broken = [False]

    def page(after_seq: int) -> Any:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("a bug in reading a page")
        return real_page(after_seq)

    monkeypatch.setattr(client_module, "_page", page)

    async def fail_then_restart() -> float:
        store = Store.open(settings.storage.path)
        record(store, settings, "0000000001")
        uploader = Uploader(settings.storage.path, settings, rng=random.Random(1))
        stopping = asyncio.Event()
        first = asyncio.ensure_future(uploader.run(stopping))
        await asyncio.to_thread(sim.wait_for_arrived, 1)
        broken[0] = True
        uploader.wake(record(store, settings, "0000000002"))  # a sweep: the bug
        with pytest.raises(RuntimeError):
            await first
        failed_at = time.monotonic()
        second = asyncio.ensure_future(uploader.run(stopping))  # the supervisor's restart
        try:
            await asyncio.to_thread(sim.wait_for_accepted, 2, 15.0)
        finally:
            stopping.set()
            await second
            store.close()
        return failed_at

    failed_at = asyncio.run(fail_then_restart())
    again = [r for r in sim.received if r.body["card_no"] == "0000000001" and r.status == 200]
    # Not before the abandoned attempt's guard: timeout + ambiguous_margin.
    assert again[0].at_mono - failed_at >= 3.0 - 0.1
    assert [row[2] for row in states(settings)] == ["delivered", "delivered"]


def test_a_request_stuck_in_a_name_lookup_is_given_up_at_its_deadline(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No socket wait bounds a hung resolver: the loop gives the request up itself, so
    # the watchdog never sees it stuck, and the thread never sends it afterwards.
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "1s", "ambiguous_margin": "0s"}
    )
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo
    hung = [True]

    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        if hung[0]:
            hung[0] = False
            release.wait(30)
        return real_getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    seen: dict[str, object] = {}

    async def lookup_hangs(store: Store, uploader: Uploader) -> None:
        uploader.wake(record(store, settings, "0000000001"))
        await asyncio.to_thread(sim.wait_for_accepted, 1, 10.0)  # the retry, once given up
        seen["alive"] = uploader.alive()
        release.set()

    asyncio.run(uploading(settings, settled(settings, 1), during=lookup_hangs))
    assert seen["alive"] is True
    conn = sqlite3.connect(settings.storage.path)
    try:
        assert conn.execute("SELECT state, attempts FROM taps").fetchall() == [("delivered", 2)]
    finally:
        conn.close()
    assert len(sim.received) == 1  # the hung attempt never reached the server


def test_a_request_cancelled_at_stop_is_not_resent_by_the_next_process_at_once(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14 item 1, across processes: a stop abandons a request the server may still
    # be running; the next process (a restart, a second later) sent it again at once.
    monkeypatch.setattr(schedule_module, "FINISH_S", 0.2)
    settings = make_settings(
        tmp_path, sim.integration_url, uplink={"timeout": "2s", "ambiguous_margin": "0s"}
    )
    sim.stall_next(1, 10.0)

    async def stop_then_start_again() -> float:
        store = Store.open(settings.storage.path)
        record(store, settings, "0000000001")
        store.close()
        stopping = asyncio.Event()
        first = asyncio.ensure_future(Uploader(settings.storage.path, settings).run(stopping))
        await asyncio.to_thread(sim.wait_for_arrived, 1)
        stopping.set()
        await first
        stopped_at = time.monotonic()
        # The next process: a new uploader over the same database.
        again = asyncio.Event()
        second = asyncio.ensure_future(Uploader(settings.storage.path, settings).run(again))
        try:
            await asyncio.to_thread(sim.wait_for_accepted, 1, 10.0)
        finally:
            again.set()
            await second
        return stopped_at

    stopped_at = asyncio.run(stop_then_start_again())
    [resent] = sim.accepted()
    # Not before the cancelled attempt's guard (timeout + ambiguous_margin from the cancel).
    assert resent.at_mono - stopped_at >= 2.0 - 0.5


def test_a_fresh_tap_is_sent_before_the_backlog(tmp_path: Path) -> None:
    # Issue 14: after an outage, a tap recorded during the drain waited for the sweep to
    # reach the end of the backlog (seconds; minutes for a long outage).
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, 41)}
    with Simulator(token=TOKEN, roster=roster, latency_s=0.05) as slow:
        settings = make_settings(tmp_path, slow.integration_url, uplink={"concurrency": 1})

        def backlog(store: Store) -> None:
            for n in range(1, 31):
                record(store, settings, f"{n:010d}")

        async def tap_now(store: Store, uploader: Uploader) -> None:
            await asyncio.to_thread(slow.wait_for_arrived, 2)
            uploader.wake(record(store, settings, "0000000040"))

        asyncio.run(uploading(settings, settled(settings, 31), before=backlog, during=tap_now))
        cards = [str(r.body["card_no"]) for r in slow.received]
    # Sent with the slot that frees next, not after the 28 taps still waiting.
    assert cards.index("0000000040") <= 3
    assert sorted(cards) == sorted({*roster} - {f"{n:010d}" for n in range(31, 40)})


def test_a_tap_recorded_before_the_uploader_runs_goes_first_too(tmp_path: Path) -> None:
    # The daemon starts its uploader after READY=1: the taps of the first moments are
    # handed to it before its run begins, and judged by its first count.
    roster = {f"{n:010d}": f"Student {n}" for n in range(1, 41)}
    with Simulator(token=TOKEN, roster=roster, latency_s=0.05) as slow:
        settings = make_settings(tmp_path, slow.integration_url, uplink={"concurrency": 1})
        store = Store.open(settings.storage.path)
        for n in range(1, 31):
            record(store, settings, f"{n:010d}")
        early = record(store, settings, "0000000040")

        async def run() -> None:
            uploader = Uploader(settings.storage.path, settings, rng=random.Random(1))
            uploader.wake(early)
            stopping = asyncio.Event()
            task = asyncio.ensure_future(uploader.run(stopping))
            try:
                await asyncio.to_thread(slow.wait_for_accepted, 31, 20.0)
            finally:
                stopping.set()
                await task

        try:
            asyncio.run(run())
        finally:
            store.close()
        cards = [str(r.body["card_no"]) for r in slow.received]
    assert cards.index("0000000040") <= 1
