from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateagent.core.answers import Delivered, Paused, Rejected, Retry
from gateagent.errors import DiskFull, StoreError
from gateagent.store import Answer, NewTap, Store, iso

JAKARTA = ZoneInfo("Asia/Jakarta")
MORNING = datetime(2024, 1, 15, 0, 30, tzinfo=UTC)  # 07:30 in Jakarta
BOOT = "boot-1"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "taps.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    opened = Store.open(db_path)
    yield opened  # type: ignore[misc]
    opened.close()


def new_tap(
    card_no: str = "0012822001",
    at: datetime = MORNING,
    direction: str = "auto",
    mono: float = 100.0,
    boot: str = BOOT,
    synced: bool = True,
) -> NewTap:
    return NewTap(
        tap_id=str(uuid.uuid4()),
        card_no=card_no,
        reader="entrance",
        gate=4,
        direction=direction,  # type: ignore[arg-type]
        tapped_at=at,
        at_mono=mono,
        boot_id=boot,
        clock_synced=synced,
    )


def record(store: Store, tap: NewTap, hold: bool = False):  # type: ignore[no-untyped-def]
    return store.record(tap, JAKARTA, 600.0, hold)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_every_connection_is_wal_and_full(store: Store) -> None:
    assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_a_recorded_tap_is_committed_at_once(store: Store, db_path: Path) -> None:
    tap = record(store, new_tap(card_no="0001"))
    # Another connection (another process in real life) sees it without any further call.
    assert rows(db_path, "SELECT tap_id, card_no, state, checktype FROM taps") == [
        (tap.tap_id, "0001", "pending", 1)
    ]
    assert rows(db_path, "SELECT tapped_at FROM taps") == [("2024-01-15T00:30:00.000Z",)]


def test_a_version_1_database_is_upgraded_with_its_taps(db_path: Path) -> None:
    from sqlite_utils import Database

    from gateagent.store import migrations

    db = Database(db_path)
    migrations().apply(db, stop_before="m002_lean_indexes")
    db.close()
    assert rows(db_path, "PRAGMA user_version") == [(1,)]
    # A check-in written by version 1 still decides the next tap after the upgrade.
    conn = sqlite3.connect(db_path)
    conn.execute(
        "INSERT INTO taps (tap_id, card_no, reader, direction, checktype, state, tapped_at,"
        " at_mono, boot_id, clock_synced, recorded_at)"
        " VALUES ('t1', '0001', 'entrance', 'auto', 1, 'pending', ?, 1.0, ?, 1, ?)",
        (iso(MORNING), BOOT, iso(MORNING)),
    )
    conn.commit()
    conn.close()
    store = Store.open(db_path)
    later = record(store, new_tap(card_no="0001", at=MORNING + timedelta(hours=8)))
    store.close()
    assert later.checktype == 2
    assert rows(db_path, "PRAGMA user_version") == [(3,)]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (lambda store: record(store, new_tap()), "taps_checkins (card_no=?"),
        (lambda store: store.pending(0, 100), "taps_pending"),
        (lambda store: store.oldest_pending(), "taps_pending"),
        (lambda store: store.last_delivery(), "taps_settled (state=?"),
        (lambda store: store.purge(MORNING, 3600.0, 3600.0), "taps_settled (state=?"),
        (
            lambda store: store.release_held(BOOT, MORNING, 100.0, JAKARTA, 600.0),
            "taps_held (boot_id=?",
        ),
        (lambda store: store.last_tap_at("entrance"), "taps_reader (reader=?"),
    ],
    ids=[
        "record",
        "pending",
        "oldest-pending",
        "last-delivery",
        "purge",
        "release-held",
        "last-tap",
    ],
)
def test_the_daemons_and_status_queries_never_scan_the_taps(
    store: Store, query: Callable[[Store], object], index: str
) -> None:
    # On a million taps a scan costs seconds. Partial indexes serve only queries whose
    # WHERE implies the index's own, so a query reworded without that term would scan.
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    query(store)
    store._conn.set_trace_callback(None)
    reads = [sql for sql in statements if sql.lstrip().upper().startswith(("SELECT", "DELETE"))]
    assert reads
    steps: list[str] = []
    for sql in reads:
        plan = [row[-1] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        # "SCAN taps" and a bare "SEARCH taps" both read the whole table.
        unindexed = [step for step in plan if step.split()[1:2] == ["taps"] and "USING" not in step]
        assert not unindexed, (sql, plan)
        steps += plan
    # The index the query was written for, with its constraint (not a walk of it all).
    assert any(index in step for step in steps), steps


def test_schema_version_and_reopen(db_path: Path) -> None:
    Store.open(db_path).close()
    assert rows(db_path, "PRAGMA user_version") == [(3,)]
    Store.open(db_path).close()
    assert rows(db_path, "SELECT count(*) FROM _sqlite_migrations") == [(3,)]


def test_each_migration_sets_the_user_version_open_reads(db_path: Path) -> None:
    # Store.open skips sqlite-utils when user_version is SCHEMA_VERSION: a migration that
    # did not set it would be applied at every start, one that set it too high never.
    from sqlite_utils import Database

    from gateagent.store import MIGRATIONS, SCHEMA_VERSION, migrations

    for number, following in enumerate(MIGRATIONS[1:], start=1):
        db = Database(db_path)
        migrations().apply(db, stop_before=following.__name__)
        db.close()
        assert rows(db_path, "PRAGMA user_version") == [(number,)]
    Store.open(db_path).close()
    assert rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(db_path, "SELECT name FROM _sqlite_migrations ORDER BY id") == [
        (migration.__name__,) for migration in MIGRATIONS
    ]


def test_sqlite_utils_is_imported_only_when_a_migration_is_due(db_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from gateagent.store import Store;"
        " Store.open(Path(sys.argv[1])).close(); print('sqlite_utils' in sys.modules)"
    )

    def opened_with_sqlite_utils() -> bool:
        done = subprocess.run(
            [sys.executable, "-c", script, str(db_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return {"True\n": True, "False\n": False}[done.stdout]

    assert opened_with_sqlite_utils()  # a new database: every migration is due
    assert not opened_with_sqlite_utils()  # up to date: plain sqlite3 only
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 2")  # as a database of an earlier version
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_last_tap_by_reader'")
    conn.execute("DROP INDEX taps_reader")
    conn.commit()
    conn.close()
    assert opened_with_sqlite_utils()
    assert rows(db_path, "SELECT count(*) FROM sqlite_master WHERE name = 'taps_reader'") == [(1,)]


def test_direction_survives_a_restart(db_path: Path) -> None:
    first = Store.open(db_path)
    assert record(first, new_tap()).checktype == 1
    first.close()

    second = Store.open(db_path)
    too_soon = record(second, new_tap(at=MORNING + timedelta(minutes=5)))
    assert (too_soon.state, too_soon.reason) == ("ignored", "too-soon-after-check-in")
    later = record(second, new_tap(at=MORNING + timedelta(hours=8)))
    assert (later.state, later.checktype) == ("pending", 2)
    tomorrow = record(second, new_tap(at=MORNING + timedelta(days=1)))
    assert tomorrow.checktype == 1
    other_card = record(second, new_tap(card_no="0002", at=MORNING + timedelta(hours=8)))
    assert other_card.checktype == 1
    second.close()


def test_fixed_directions(store: Store) -> None:
    assert record(store, new_tap(direction="out")).checktype == 2
    assert record(store, new_tap(direction="in", at=MORNING + timedelta(minutes=1))).checktype == 1


def test_counts_follow_every_change(store: Store, db_path: Path) -> None:
    taps = [record(store, new_tap(card_no=f"{n:04d}")) for n in range(6)]
    record(store, new_tap(card_no="0000", at=MORNING + timedelta(minutes=1)))  # ignored
    record(store, new_tap(card_no="0100", mono=5.0), hold=True)
    store.settle(
        [
            Answer(taps[0].seq, Delivered("Budi", "PRESENT")),
            Answer(taps[1].seq, Rejected("unknown-card", 404, "No student found")),
            Answer(taps[2].seq, Retry("http-503", "")),
        ],
        MORNING,
    )
    counted = dict(rows(db_path, "SELECT state, count(*) FROM taps GROUP BY state"))
    assert store.counts() == {
        "pending": counted.get("pending", 0),
        "delivered": 1,
        "rejected": 1,
        "ignored": 1,
        "held": 1,
    }
    assert counted["pending"] == 4
    store.purge(MORNING + timedelta(days=365), 0, 0)
    assert store.counts() == {"pending": 4, "delivered": 0, "rejected": 0, "ignored": 0, "held": 1}


def test_settle_keeps_every_answer(store: Store, db_path: Path) -> None:
    taps = [record(store, new_tap(card_no=f"{n:04d}")) for n in range(5)]
    store.settle(
        [
            Answer(taps[0].seq, Delivered("Budi", "PRESENT")),
            Answer(taps[1].seq, Delivered(duplicate=True)),
            Answer(taps[2].seq, Rejected("future-date", 400, "Cannot add attendance for tomorrow")),
            Answer(taps[3].seq, Retry("timeout", "ReadTimeout")),
            Answer(taps[4].seq, Paused("paused-auth", 400, "Invalid authentication token")),
        ],
        MORNING,
    )
    got = rows(
        db_path,
        "SELECT state, reason, attempts, last_error, student_name, attendance_status, settled_at"
        " FROM taps ORDER BY seq",
    )
    settled = iso(MORNING)
    assert got == [
        ("delivered", None, 1, None, "Budi", "PRESENT", settled),
        ("delivered", "duplicate", 1, None, None, None, settled),
        (
            "rejected",
            "future-date",
            1,
            "400 Cannot add attendance for tomorrow",
            None,
            None,
            settled,
        ),
        ("pending", None, 1, "timeout: ReadTimeout", None, None, None),
        ("pending", None, 1, "paused-auth: Invalid authentication token", None, None, None),
    ]
    assert [tap.seq for tap in store.pending(0, 10)] == [taps[3].seq, taps[4].seq]
    assert store.last_delivery() == MORNING


def test_pending_pages_in_recorded_order(store: Store) -> None:
    seqs = [record(store, new_tap(card_no=f"{n:04d}")).seq for n in range(7)]
    first = store.pending(0, 3)
    second = store.pending(first[-1].seq, 3)
    third = store.pending(second[-1].seq, 3)
    assert [t.seq for t in first + second + third] == seqs
    assert first[0].tapped_at == MORNING
    assert store.oldest_pending() == MORNING


def test_held_taps_are_corrected_when_the_clock_synchronizes(store: Store, db_path: Path) -> None:
    # The clock restarted from an old saved time: the wall reading is a day behind.
    wrong = MORNING - timedelta(days=1)
    a = record(store, new_tap(at=wrong, mono=1000.0, synced=False), hold=True)
    b = record(
        store,
        new_tap(at=wrong + timedelta(hours=8), mono=1000.0 + 8 * 3600, synced=False),
        hold=True,
    )
    other_boot = record(store, new_tap(card_no="0009", boot="boot-0", synced=False), hold=True)
    assert (a.state, a.reason, a.checktype) == ("held", "clock-unsynchronized", None)
    assert store.pending(0, 10) == []

    # Synchronized at mono 1000 + 9 h, when the true time is MORNING + 9 h.
    released = store.release_held(
        BOOT, MORNING + timedelta(hours=9), 1000.0 + 9 * 3600, JAKARTA, 600
    )
    assert released == 2
    assert store.mark_clock_unknown(BOOT) == 1
    got = rows(
        db_path,
        "SELECT seq, state, checktype, tapped_at, recorded_at, reason FROM taps ORDER BY seq",
    )
    assert got == [
        (a.seq, "pending", 1, iso(MORNING), iso(wrong), None),
        (
            b.seq,
            "pending",
            2,
            iso(MORNING + timedelta(hours=8)),
            iso(wrong + timedelta(hours=8)),
            None,
        ),
        (other_boot.seq, "held", None, iso(MORNING), iso(MORNING), "clock-unknown"),
    ]


def test_requeue_and_drop(store: Store, db_path: Path) -> None:
    taps = [record(store, new_tap(card_no=f"{n:04d}")) for n in range(3)]
    store.settle(
        [
            Answer(taps[0].seq, Rejected("unknown-card", 404, "No student")),
            Answer(taps[1].seq, Rejected("http-422", 422, "bad")),
        ],
        MORNING,
    )
    held = record(store, new_tap(card_no="0009", boot="boot-0", synced=False), hold=True)
    store.mark_clock_unknown(BOOT)
    assert store.requeue(reason="unknown-card") == 1
    assert store.requeue(states=("held",), drop=True) == 1
    got = dict(rows(db_path, "SELECT seq, state || ':' || coalesce(reason, '') FROM taps"))
    assert got == {
        taps[0].seq: "pending:",
        taps[1].seq: "rejected:http-422",
        taps[2].seq: "pending:",
        held.seq: "rejected:dropped",
    }


def test_requeue_held_takes_only_taps_that_can_no_longer_be_corrected(
    store: Store, db_path: Path
) -> None:
    # Issue 11, item 4: this boot's held taps are corrected by the daemon at the sync;
    # sent by a requeue they would go with a time that may be wrong.
    store.set_meta("timezone", "Asia/Jakarta")
    store.set_meta("min_checkout_after_s", "600.0")
    this_boot = record(store, new_tap(card_no="0001", synced=False), hold=True)
    old = record(store, new_tap(card_no="0002", boot="boot-0", synced=False), hold=True)
    assert store.requeue(states=("held",)) == 0  # not marked clock-unknown yet
    assert store.mark_clock_unknown(BOOT) == 1
    assert store.requeue(states=("held",)) == 1
    got = dict(rows(db_path, "SELECT seq, state || ':' || coalesce(reason, '') FROM taps"))
    assert got == {this_boot.seq: "held:clock-unsynchronized", old.seq: "pending:"}
    assert store.requeue(states=("held",), drop=True) == 0  # --drop spares it too


def test_a_requeued_held_tap_is_decided_as_any_tap(store: Store) -> None:
    # Its direction comes from _decide, not from a forced checktype: the card checked
    # in that morning already, so the held tap of an earlier boot is its check-out.
    store.set_meta("timezone", "Asia/Jakarta")
    store.set_meta("min_checkout_after_s", "600.0")
    checkin = record(store, new_tap(card_no="0001"))
    record(
        store,
        new_tap(card_no="0001", at=MORNING + timedelta(hours=8), boot="boot-0", synced=False),
        hold=True,
    )
    store.mark_clock_unknown(BOOT)
    assert store.requeue(states=("held",)) == 1
    assert [(t.seq, t.checktype) for t in store.pending(0, 10)] == [
        (checkin.seq, 1),
        (checkin.seq + 1, 2),
    ]


def test_requeue_held_needs_the_daemons_timezone(store: Store) -> None:
    record(store, new_tap(boot="boot-0", synced=False), hold=True)
    store.mark_clock_unknown(BOOT)
    with pytest.raises(StoreError, match="start `gateagent run` once first"):
        store.requeue(states=("held",))


@pytest.mark.parametrize("reason", ["unknown-card", "future-date", "http-422"])
def test_a_rejected_check_in_does_not_make_the_next_tap_a_check_out(
    store: Store, reason: str
) -> None:
    # Issue 11, item 12: the server never recorded that check-in, and refuses a
    # check-out without one ("has no check-in record").
    first = record(store, new_tap(card_no="0001"))
    store.settle([Answer(first.seq, Rejected(reason, 404, "No student found"))], MORNING)
    later = record(store, new_tap(card_no="0001", at=MORNING + timedelta(hours=8)))
    assert later.checktype == 1


def test_a_delivered_or_pending_check_in_makes_the_next_tap_a_check_out(store: Store) -> None:
    first = record(store, new_tap(card_no="0001"))
    assert record(store, new_tap(card_no="0001", at=MORNING + timedelta(hours=1))).checktype == 2
    store.settle([Answer(first.seq, Delivered(None, None))], MORNING)
    assert record(store, new_tap(card_no="0001", at=MORNING + timedelta(hours=2))).checktype == 2


def test_last_tap_at_comes_from_the_taps(store: Store) -> None:
    assert store.last_tap_at("entrance") is None
    record(store, new_tap(card_no="0001"))
    record(store, new_tap(card_no="0002", at=MORNING + timedelta(minutes=5)))
    assert store.last_tap_at("entrance") == iso(MORNING + timedelta(minutes=5))
    assert store.last_tap_at("exit") is None


def test_retention_never_deletes_pending_or_held(store: Store, db_path: Path) -> None:
    old = [record(store, new_tap(card_no=f"{n:04d}")) for n in range(4)]
    store.settle(
        [
            Answer(old[0].seq, Delivered()),
            Answer(old[1].seq, Rejected("unknown-card", 404, "")),
        ],
        MORNING,
    )
    record(store, new_tap(card_no="0100"), hold=True)
    # 31 days later: delivered (30 d) goes, rejected (90 d) stays.
    assert store.purge(MORNING + timedelta(days=31), 30 * 86400, 90 * 86400) == 1
    assert store.counts() == {"pending": 2, "delivered": 0, "rejected": 1, "ignored": 0, "held": 1}
    assert store.purge(MORNING + timedelta(days=91), 30 * 86400, 90 * 86400) == 1
    assert store.purge(MORNING + timedelta(days=10_000), 0, 0) == 0
    assert store.counts()["pending"] == 2


def test_export_streams_every_tap(store: Store) -> None:
    for n in range(3):
        record(store, new_tap(card_no=f"{n:04d}"))
    exported = list(store.export())
    assert [row["card_no"] for row in exported] == ["0000", "0001", "0002"]
    assert "token" not in exported[0]
    assert list(store.export(("rejected",))) == []


def test_reader_health(store: Store) -> None:
    store.set_reader("entrance", False, "starting")
    store.set_reader("exit", False, "missing: /dev/input/by-id/x")
    store.set_reader("entrance", True, None)
    store.forget_readers(["entrance", "exit"])
    assert store.readers() == [
        {"name": "entrance", "connected": True, "last_tap_at": None, "last_error": None},
        {
            "name": "exit",
            "connected": False,
            "last_tap_at": None,
            "last_error": "missing: /dev/input/by-id/x",
        },
    ]
    store.forget_readers(["exit"])
    assert [r["name"] for r in store.readers()] == ["exit"]


@pytest.mark.parametrize(
    "damage",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["garbage", "bad-header"],
)
def test_damaged_database_is_moved_aside(
    db_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.write_bytes(damage)
    Path(f"{db_path}-wal").write_bytes(b"old wal")
    Path(f"{db_path}-shm").write_bytes(b"old shm")
    store = Store.open(db_path, now=MORNING)
    record(store, new_tap())
    assert store.counts()["pending"] == 1
    assert "moved_aside" in store.meta()
    store.close()

    aside = db_path.with_name("taps.db.damaged-20240115T003000Z")
    assert aside.read_bytes() == damage
    assert Path(f"{aside}-wal").read_bytes() == b"old wal"
    assert Path(f"{aside}-shm").exists()  # an index SQLite rebuilds; only the -wal holds data
    assert any(
        r.levelname == "CRITICAL" and "moved aside" in r.getMessage() for r in caplog.records
    )


def test_corrupted_page_is_moved_aside(db_path: Path) -> None:
    store = Store.open(db_path)
    for n in range(300):
        record(store, new_tap(card_no=f"{n:06d}"))
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(db_path.read_bytes())
    page = 4096
    data[page * 2 : page * 3] = b"\x55" * page  # overwrite a b-tree page
    db_path.write_bytes(bytes(data))

    reopened = Store.open(db_path, now=MORNING)
    assert reopened.counts()["pending"] == 0
    assert reopened.meta()["moved_aside"].startswith(iso(MORNING))
    reopened.close()


def test_disk_full_is_reported_and_nothing_half_written(store: Store) -> None:
    record(store, new_tap(card_no="0001"))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFull):
        for n in range(2000):
            record(store, new_tap(card_no=f"x{n:05d}" + "9" * 20))
    counted = store.counts()["pending"]
    store._conn.execute("PRAGMA max_page_count = 1000000")
    record(store, new_tap(card_no="0002"))
    assert store.counts()["pending"] == counted + 1
