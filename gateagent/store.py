"""The tap buffer: one SQLite file, the only importer of sqlite_utils.

A tap exists once `record()` has committed it (SPEC "Delivery guarantees"): every
connection runs in WAL mode with `synchronous=FULL`, one commit per recorded tap. The
uploader's answers are written in batches (`settle()`), because losing one of those in
a crash only means the tap is sent again, which the at-least-once contract allows.

States: `pending` (to send), `delivered`, `rejected` (kept with the reason), `ignored`
(kept, never sent), `held` (recorded while the clock was not synchronized).

The schema is versioned with sqlite-utils migrations, and `PRAGMA user_version` carries
the schema number: each migration sets it in the transaction that records the migration
as applied. Only `Store.open` (the daemon) applies them, and it imports sqlite_utils only
when `user_version` says one is due (a new or older database): sqlite_utils and what it
imports (click, dateutil, pluggy and its plugin scan) cost about 200M instructions at
start and 3 MB the daemon would hold for good, for a check plain sqlite3 makes
(benchmarks/startup.py). Queries go through the standard sqlite3 module too, so `status`
and `export` start without it. A damaged file is moved aside with its `-wal` and `-shm`,
never overwritten.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from gateagent.core.answers import Delivered, Outcome, Paused, Rejected, Retry
from gateagent.core.clockfix import correct
from gateagent.core.direction import Decision, Direction, EarlierTap, decide
from gateagent.errors import DiskFull, StoreError

if TYPE_CHECKING:
    from sqlite_utils import Database, Migrations

log = logging.getLogger(__name__)

STATES = ("pending", "delivered", "rejected", "ignored", "held")
# The columns of `export`, in order (README "Command line").
EXPORT_COLUMNS = (
    "tap_id", "card_no", "reader", "gate", "checktype", "state", "reason", "tapped_at",
    "clock_synced", "attempts", "last_error", "student_name", "attendance_status",
    "recorded_at", "settled_at",
)  # fmt: skip
CLOCK_UNKNOWN = "clock-unknown"
CLOCK_UNSYNCHRONIZED = "clock-unsynchronized"
_PURGE_BATCH = 5000
# How long a statement waits for another writer (`gateagent requeue`, a backup) to finish.
BUSY_TIMEOUT_S = 10.0
# Each connection's page cache: an eighth of SQLite's default (2 MB). A connection's cache
# is emptied whenever another one has written (the writer and the uploader do all day),
# so a large one held little for long, but swung with every busy stretch, SQLite's memory
# between 0.6 and 4.6 MB, and what glibc gave it for that stayed with the process
# (benchmarks/longrun.py --heap, issue 14). With this it stayed under 1.1 MB.
CACHE_KIB = 256


def m001_taps(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE taps (
            seq INTEGER PRIMARY KEY,
            tap_id TEXT NOT NULL UNIQUE,
            card_no TEXT NOT NULL,
            reader TEXT NOT NULL,
            gate INTEGER,
            direction TEXT NOT NULL,
            checktype INTEGER,
            state TEXT NOT NULL,
            reason TEXT,
            tapped_at TEXT NOT NULL,
            at_mono REAL NOT NULL,
            boot_id TEXT NOT NULL,
            clock_synced INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            student_name TEXT,
            attendance_status TEXT,
            recorded_at TEXT NOT NULL,
            settled_at TEXT
        );
        CREATE INDEX taps_pending ON taps (seq) WHERE state = 'pending';
        CREATE INDEX taps_held ON taps (boot_id, at_mono) WHERE state = 'held';
        CREATE INDEX taps_card ON taps (card_no, tapped_at);
        CREATE INDEX taps_settled ON taps (state, settled_at);

        -- status must stay fast on a million taps: counts kept by triggers, not count(*).
        CREATE TABLE tap_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL);
        INSERT INTO tap_counts VALUES
            ('pending', 0), ('delivered', 0), ('rejected', 0), ('ignored', 0), ('held', 0);
        CREATE TRIGGER taps_counted_insert AFTER INSERT ON taps BEGIN
            UPDATE tap_counts SET n = n + 1 WHERE state = new.state;
        END;
        CREATE TRIGGER taps_counted_delete AFTER DELETE ON taps BEGIN
            UPDATE tap_counts SET n = n - 1 WHERE state = old.state;
        END;
        CREATE TRIGGER taps_counted_update AFTER UPDATE OF state ON taps
            WHEN old.state != new.state BEGIN
            UPDATE tap_counts SET n = n - 1 WHERE state = old.state;
            UPDATE tap_counts SET n = n + 1 WHERE state = new.state;
        END;

        CREATE TABLE readers (
            name TEXT PRIMARY KEY,
            connected INTEGER NOT NULL,
            last_tap_at TEXT,
            last_error TEXT,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        PRAGMA user_version = 1;
        """
    )


def m002_lean_indexes(db: Database) -> None:
    # Every index a new tap enters is one more page in the WAL at each commit, and the
    # commit is the tap path's cost (benchmarks/ingest.py). The direction query reads
    # check-ins only, and retention reads settled taps only: a new pending check-out now
    # enters neither index.
    db.executescript(
        """
        DROP INDEX taps_card;
        CREATE INDEX taps_checkins ON taps (card_no, tapped_at) WHERE checktype = 1;
        DROP INDEX taps_settled;
        CREATE INDEX taps_settled ON taps (state, settled_at) WHERE settled_at IS NOT NULL;
        PRAGMA user_version = 2;
        """
    )


def m003_last_tap_by_reader(db: Database) -> None:
    # `status` shows each reader's last tap from the taps themselves (issue 11: the
    # daemon published it only every few seconds): max(seq) of a reader is one step down
    # this index, however many taps the reader or the others have.
    db.executescript(
        """
        CREATE INDEX taps_reader ON taps (reader, seq);
        PRAGMA user_version = 3;
        """
    )


# Migration N ends with `PRAGMA user_version = N`: a database at SCHEMA_VERSION has
# them all (tests/test_store.py checks each).
MIGRATIONS = (m001_taps, m002_lean_indexes, m003_last_tap_by_reader)
SCHEMA_VERSION = len(MIGRATIONS)


def migrations() -> Migrations:
    """The schema's migrations, in order."""
    from sqlite_utils import Migrations  # noqa: PLC0415 (see the module's docstring)

    chain = Migrations("gateagent")
    for migration in MIGRATIONS:
        chain()(migration)
    return chain


# NewTap and Tap are named tuples, not frozen dataclasses: as immutable, and made once
# per tap at a fifth of a frozen dataclass's cost (its __init__ sets every field
# through object.__setattr__).
class NewTap(NamedTuple):
    """A tap as the reader loop saw it, before it is recorded."""

    tap_id: str
    card_no: str
    reader: str
    gate: int | None
    direction: Direction
    tapped_at: datetime  # aware, UTC
    at_mono: float
    boot_id: str
    clock_synced: bool


class Tap(NamedTuple):
    """A recorded tap."""

    seq: int
    tap_id: str
    card_no: str
    reader: str
    gate: int | None
    direction: Direction
    checktype: int | None
    state: str
    reason: str | None
    tapped_at: datetime
    attempts: int


@dataclass(frozen=True)
class Answer:
    """The uploader's result for one tap, to be written by `settle()`."""

    seq: int
    outcome: Outcome


# Zero-padded numbers as ready strings: strftime (and "%02d") cost a tap about three
# times what these lookups do, and every tap formats its time (benchmarks/ingest.py).
_DIGITS_2 = tuple(f"{n:02d}" for n in range(100))
_DIGITS_3 = tuple(f"{n:03d}" for n in range(1000))


def iso(moment: datetime) -> str:
    """UTC with milliseconds and `Z`, as the integration API's `tanggal` (seed 000).

    Fixed width (a four-digit year), so text order is time order."""
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{_DIGITS_2[utc.month]}-{_DIGITS_2[utc.day]}T{_DIGITS_2[utc.hour]}"
        f":{_DIGITS_2[utc.minute]}:{_DIGITS_2[utc.second]}.{_DIGITS_3[utc.microsecond // 1000]}Z"
    )


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Store:
    """One connection to the tap database, used from one thread."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        # record()'s statements, on one cursor rather than a new one per statement.
        self._cursor = conn.cursor()
        # The local day of the last tap decided, and the UTC text of its start.
        self._day: tuple[int, int, int, ZoneInfo] | None = None
        self._day_start = ""

    @classmethod
    def open(cls, path: Path, now: datetime | None = None) -> Store:
        """Open (creating or upgrading) the database at `path`; move a damaged one aside."""
        now = now or datetime.now(UTC)
        moved: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            problem = _damage(path)
            if problem is not None:
                moved = _move_aside(path, now, problem)
            conn = _connect(path)
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    _migrate(path)
            except BaseException:
                conn.close()
                raise
            store = cls(path, conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the tap database {path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot open the tap database {path}: {exc.strerror}") from None
        if moved is not None:
            store.set_meta("moved_aside", moved)
        return store

    @classmethod
    def connect(cls, path: Path) -> Store:
        """One more connection to the database `open()` prepared (the recorder's writer)."""
        try:
            return cls(path, _connect(path))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the tap database {path}: {exc}") from None

    @classmethod
    def open_for_reading(cls, path: Path) -> Store:
        """Open an existing database for `status`/`export`, without checks or migrations."""
        if not path.exists():
            raise StoreError(f"no tap database at {path} (has `gateagent run` started yet?)")
        return cls.connect(path)

    def close(self) -> None:
        self._conn.close()

    # -- recording -----------------------------------------------------------------

    def record(self, tap: NewTap, tz: ZoneInfo, min_checkout_after_s: float, hold: bool) -> Tap:
        """Commit one tap; its direction is decided from the card's earlier recorded taps.

        Raises DiskFull when SQLite reports SQLITE_FULL: the caller keeps the tap and
        tries again, nothing of it is half-written.
        """
        # What `_failing_as()` and `_writing()` do, written out: on the tap path their
        # two generator context managers cost as much as the direction query.
        cursor = self._cursor
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                # One text for the tap's time: tapped_at, recorded_at, the direction query.
                tapped_at = iso(tap.tapped_at)
                checktype: int | None
                reason: str | None
                if hold:
                    checktype, state, reason = None, "held", CLOCK_UNSYNCHRONIZED
                else:
                    decision = self._decide(
                        tap.card_no, tap.tapped_at, tap.direction, tz, min_checkout_after_s,
                        at_iso=tapped_at,
                    )  # fmt: skip
                    checktype, state, reason = _columns(decision)
                cursor.execute(
                    "INSERT INTO taps (tap_id, card_no, reader, gate, direction, checktype, state,"
                    " reason, tapped_at, at_mono, boot_id, clock_synced, recorded_at, settled_at)"
                    # recorded_at: the wall clock's own reading (tapped_at may be corrected
                    # later); an ignored tap is settled when it is recorded. Written in SQL
                    # from ?9 and ?7: a bound None costs the sqlite3 module a failed
                    # adaptation (3k instructions).
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?9,"
                    " CASE ?7 WHEN 'ignored' THEN ?9 END)",
                    (
                        tap.tap_id,
                        tap.card_no,
                        tap.reader,
                        tap.gate,
                        tap.direction,
                        checktype,
                        state,
                        reason,
                        tapped_at,
                        tap.at_mono,
                        tap.boot_id,
                        int(tap.clock_synced),
                    ),
                )
                seq = cursor.lastrowid
                cursor.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself fails (a full disk): nothing stays half-open.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._error("record a tap", exc) from None
        assert seq is not None
        return Tap(
            seq, tap.tap_id, tap.card_no, tap.reader, tap.gate, tap.direction,
            checktype, state, reason, tap.tapped_at, 0,
        )  # fmt: skip

    def _decide(
        self,
        card_no: str,
        at: datetime,
        direction: Direction,
        tz: ZoneInfo,
        min_after_s: float,
        *,
        at_iso: str | None = None,
    ) -> Decision:
        """`at_iso` is `iso(at)`, if the caller has it already."""
        if direction != "auto":
            return decide(at, direction, (), tz, min_after_s)
        # decide() needs only the card's first check-in of that local day up to `at`.
        # Only a check-in the server has or may still take counts (pending, released
        # from held, delivered): one it rejected (`unknown-card`, `future-date`, ...)
        # never reached its records, and a check-out after it would be refused with
        # "has no check-in record" (issue 11, item 12; README "Card numbers").
        local = at.astimezone(tz)
        day = (local.year, local.month, local.day, tz)
        if day != self._day:
            # The day's start, formatted once a day rather than once a tap.
            self._day_start = iso(datetime(local.year, local.month, local.day, tzinfo=tz))
            self._day = day
        row = self._cursor.execute(
            "SELECT min(tapped_at) FROM taps WHERE card_no = ? AND checktype = 1"
            " AND tapped_at >= ? AND tapped_at <= ? AND state IN ('pending', 'delivered')",
            (card_no, self._day_start, iso(at) if at_iso is None else at_iso),
        ).fetchone()
        earlier = [EarlierTap(parse_iso(row[0]), 1)] if row[0] else []
        return decide(at, direction, earlier, tz, min_after_s)

    @contextmanager
    def _failing_as(self, what: str) -> Iterator[None]:
        """SQLite's errors as ours: DiskFull for SQLITE_FULL, else StoreError."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: sqlite3.DatabaseError) -> StoreError:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return DiskFull(f"the disk of {self.path} is full")
        return StoreError(f"cannot {what} in {self.path}: {exc}")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction that takes the write lock first (BEGIN IMMEDIATE).

        A deferred transaction that reads and then writes fails at once with SQLITE_BUSY
        when another process (`gateagent requeue`) is writing; taking the lock up front
        waits for it instead, up to the connection's busy timeout.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself fails (a full disk): nothing stays half-open.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- the clock (SPEC "Time") -----------------------------------------------------

    def release_held(
        self,
        boot_id: str,
        wall_at_sync: datetime,
        mono_at_sync: float,
        tz: ZoneInfo,
        min_checkout_after_s: float,
    ) -> int:
        """The clock synchronized: correct this boot's held taps, decide them, send them.

        Both the recorder's writer thread and the daemon's loop may call this; the held
        taps are read inside the write transaction, so a tap is released once.
        """
        with self._failing_as("release held taps"), self._writing():
            rows = self._conn.execute(
                "SELECT seq, card_no, direction, at_mono FROM taps"
                " WHERE state = 'held' AND boot_id = ? ORDER BY at_mono",
                (boot_id,),
            ).fetchall()
            for seq, card_no, direction, at_mono in rows:
                at = correct(wall_at_sync, mono_at_sync, at_mono)
                decision = self._decide(card_no, at, direction, tz, min_checkout_after_s)
                checktype, state, reason = _columns(decision)
                self._conn.execute(
                    "UPDATE taps SET tapped_at = ?, checktype = ?, state = ?, reason = ?,"
                    " settled_at = ? WHERE seq = ?",
                    (
                        iso(at),
                        checktype,
                        state,
                        reason,
                        iso(at) if state == "ignored" else None,
                        seq,
                    ),
                )
        return len(rows)

    def mark_clock_unknown(self, boot_id: str) -> int:
        """Held taps of earlier boots can never be corrected: say so until a technician acts."""
        with self._failing_as("mark held taps of earlier boots"):
            cursor = self._conn.execute(
                "UPDATE taps SET reason = ? WHERE state = 'held' AND boot_id != ?"
                " AND reason IS NOT ?",
                (CLOCK_UNKNOWN, boot_id, CLOCK_UNKNOWN),
            )
            return cursor.rowcount

    # -- the uploader ------------------------------------------------------------------

    def pending(self, after_seq: int, limit: int) -> list[Tap]:
        """Pending taps in the order they were recorded, from `after_seq` on."""
        with self._failing_as("read pending taps"):
            rows = self._conn.execute(
                "SELECT seq, tap_id, card_no, reader, gate, direction, checktype, state, reason,"
                " tapped_at, attempts FROM taps WHERE state = 'pending' AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [_tap(row) for row in rows]

    def oldest_pending_by_card(self) -> dict[str, int]:
        """Each card with a pending tap, and the seq of its oldest: the uploader sends a
        fresh tap that is its card's oldest first (core/schedule.py, "Fresh taps first")."""
        with self._failing_as("read the cards of pending taps"):
            rows = self._conn.execute(
                "SELECT card_no, min(seq) FROM taps WHERE state = 'pending' GROUP BY card_no"
            ).fetchall()
        return dict(rows)

    def last_seq(self) -> int:
        """The newest tap's seq (0 for none): where the uploader's first flush ends."""
        with self._failing_as("read the newest tap"):
            return int(self._conn.execute("SELECT coalesce(max(seq), 0) FROM taps").fetchone()[0])

    def watermarks(self) -> tuple[int, str]:
        """The newest tap's seq and the latest answer's settled_at ("" for none): what a
        count of this process's taps and answers starts from (the metrics)."""
        with self._failing_as("read the latest answer"):
            (settled,) = self._conn.execute(
                "SELECT max(settled_at) FROM taps WHERE settled_at IS NOT NULL"
            ).fetchone()
        return self.last_seq(), settled or ""

    def settle(self, answers: Sequence[Answer], now: datetime) -> None:
        """Write a batch of the uploader's answers in one commit."""
        at = iso(now)
        with self._failing_as("write the server's answers"), self._writing():
            for answer in answers:
                self._conn.execute(*_settling(answer, at))

    # -- technicians -----------------------------------------------------------------

    def requeue(
        self,
        states: Sequence[str] = ("rejected",),
        reason: str | None = None,
        card_no: str | None = None,
        drop: bool = False,
    ) -> int:
        """Send matching rejected (or held) taps again, or with `drop` settle them for good.

        Held taps are taken only once they can no longer be corrected (reason
        `clock-unknown`: their boot ended before the clock synchronized); this boot's
        held taps are released, corrected, by the daemon (SPEC "Time"). A requeued held
        tap is decided as any tap is (`_decide`), with its uncorrected time (the
        technician's call) and the daemon's timezone and `min_checkout_after`.
        """
        where = [f"state IN ({', '.join('?' for _ in states)})"]
        params: list[Any] = list(states)
        if "held" in states:
            where.append("(state != 'held' OR reason = ?)")
            params.append(CLOCK_UNKNOWN)
        if reason is not None:
            where.append("reason = ?")
            params.append(reason)
        if card_no is not None:
            where.append("card_no = ?")
            params.append(card_no)
        condition = " AND ".join(where)
        with self._failing_as("requeue taps"), self._writing():
            if drop:
                cursor = self._conn.execute(
                    "UPDATE taps SET state = 'rejected', reason = 'dropped', settled_at = ?"  # noqa: S608
                    f" WHERE {condition}",
                    [iso(datetime.now(UTC)), *params],
                )
                return cursor.rowcount
            rows = self._conn.execute(
                "SELECT seq, state, card_no, direction, tapped_at, checktype FROM taps"  # noqa: S608
                f" WHERE {condition} ORDER BY tapped_at, seq",
                params,
            ).fetchall()
            if any(state == "held" for _, state, *_ in rows):
                tz, min_after_s = self._decision_settings()
            for seq, was, card, direction, tapped_at, checktype_was in rows:
                checktype, state, why, settled = checktype_was, "pending", None, None
                if was == "held":
                    decision = self._decide(card, parse_iso(tapped_at), direction, tz, min_after_s)
                    checktype, state, why = _columns(decision)
                    settled = tapped_at if state == "ignored" else None
                self._conn.execute(
                    "UPDATE taps SET state = ?, reason = ?, checktype = ?, settled_at = ?"
                    " WHERE seq = ?",
                    (state, why, checktype, settled, seq),
                )
            return len(rows)

    def _decision_settings(self) -> tuple[ZoneInfo, float]:
        """The timezone and min_checkout_after the daemon decides with (it writes them)."""
        meta = self.meta()
        if "timezone" not in meta:
            raise StoreError(
                f"cannot requeue held taps in {self.path}: start `gateagent run` once first,"
                " so the database knows the gate's timezone"
            )
        return ZoneInfo(meta["timezone"]), float(meta.get("min_checkout_after_s", "0"))

    def purge(self, now: datetime, keep_sent_s: float, keep_rejected_s: float) -> int:
        """Retention: delete settled taps past their keep time; never pending or held ones."""
        with self._failing_as("delete old taps"):
            deleted = 0
            for states, keep_s in (
                (("delivered", "ignored"), keep_sent_s),
                (("rejected",), keep_rejected_s),
            ):
                cutoff = iso(now - timedelta(seconds=keep_s))
                marks = ", ".join("?" for _ in states)
                while True:
                    cursor = self._conn.execute(
                        "DELETE FROM taps WHERE seq IN (SELECT seq FROM taps"  # noqa: S608
                        f" WHERE state IN ({marks}) AND settled_at < ? LIMIT ?)",
                        (*states, cutoff, _PURGE_BATCH),
                    )
                    deleted += cursor.rowcount
                    if cursor.rowcount < _PURGE_BATCH:
                        break
            return deleted

    def export(
        self,
        states: Sequence[str] = STATES,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        card_no: str | None = None,
        last: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every tap in the given states, oldest first, streamed row by row; only those
        tapped at `since` or later and before `until`, of `card_no`, the `last` of them."""
        where = [f"state IN ({', '.join('?' for _ in states)})"]
        values: list[object] = list(states)
        # tapped_at is iso(): one fixed-width UTC format, so text order is time order.
        if since is not None:
            where.append("tapped_at >= ?")
            values.append(iso(since))
        if until is not None:
            where.append("tapped_at < ?")
            values.append(iso(until))
        if card_no is not None:
            where.append("card_no = ?")
            values.append(card_no)
        # Only our own column names and `?` marks are joined in; values are parameters.
        columns = ", ".join(EXPORT_COLUMNS)
        query = f"SELECT seq, {columns} FROM taps WHERE {' AND '.join(where)}"  # noqa: S608
        if last is not None:
            # The newest `last`, still written oldest first.
            query = f"SELECT * FROM ({query} ORDER BY seq DESC LIMIT ?)"  # noqa: S608
            values.append(last)
        with self._failing_as("export taps"):
            cursor = self._conn.execute(f"{query} ORDER BY seq", values)
            for row in cursor:
                yield dict(zip(EXPORT_COLUMNS, row[1:], strict=True))

    # -- health ----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self._failing_as("count taps"):
            return {row[0]: row[1] for row in self._conn.execute("SELECT state, n FROM tap_counts")}

    def oldest_pending(self) -> datetime | None:
        with self._failing_as("read the oldest pending tap"):
            row = self._conn.execute(
                "SELECT tapped_at FROM taps WHERE state = 'pending' ORDER BY seq LIMIT 1"
            ).fetchone()
            return parse_iso(row[0]) if row else None

    def last_delivery(self) -> datetime | None:
        with self._failing_as("read the last delivery"):
            row = self._conn.execute(
                # `IS NOT NULL` lets SQLite use the partial index taps_settled.
                "SELECT max(settled_at) FROM taps"
                " WHERE state = 'delivered' AND settled_at IS NOT NULL"
            ).fetchone()
            return parse_iso(row[0]) if row and row[0] else None

    def set_meta(self, key: str, value: str) -> None:
        with self._failing_as("write the daemon's state"):
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def meta(self) -> dict[str, str]:
        with self._failing_as("read the daemon's state"):
            return {row[0]: row[1] for row in self._conn.execute("SELECT key, value FROM meta")}

    def set_reader(self, name: str, connected: bool, last_error: str | None) -> None:
        # The table's last_tap_at is no longer written: status and the metrics read a
        # reader's last tap from the taps (`last_tap_at()`, issue 11). The column stays
        # (dropping it would take a migration), NULL or what an older version left.
        with self._failing_as("write a reader's state"):
            self._conn.execute(
                "INSERT INTO readers (name, connected, last_error, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " connected = excluded.connected, last_error = excluded.last_error,"
                " updated_at = excluded.updated_at",
                (name, int(connected), last_error, iso(datetime.now(UTC))),
            )

    def last_tap_at(self, reader: str) -> str | None:
        """When the reader's latest tap was recorded (the wall clock's reading), or None."""
        with self._failing_as("read a reader's last tap"):
            row = self._conn.execute(
                "SELECT recorded_at FROM taps WHERE seq = (SELECT max(seq) FROM taps"
                " WHERE reader = ?)",
                (reader,),
            ).fetchone()
            return row[0] if row else None

    def forget_readers(self, keep: Sequence[str]) -> None:
        with self._failing_as("write the readers"):
            marks = ", ".join("?" for _ in keep)
            self._conn.execute(f"DELETE FROM readers WHERE name NOT IN ({marks})", list(keep))  # noqa: S608

    def readers(self) -> list[dict[str, Any]]:
        with self._failing_as("read the readers"):
            rows = self._conn.execute(
                "SELECT name, connected, last_tap_at, last_error FROM readers ORDER BY name"
            ).fetchall()
            return [
                {"name": name, "connected": bool(connected), "last_tap_at": at, "last_error": error}
                for name, connected, at, error in rows
            ]


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit (isolation_level None): a statement outside BEGIN ... COMMIT commits at
    # once, and the transactions are the explicit ones of _writing().
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit is on the disk before record() returns (SPEC "Operations").
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return conn


def _migrate(path: Path) -> None:
    """Create or upgrade the schema with sqlite-utils, on a connection of its own (the
    migrations it has recorded as applied are skipped)."""
    from sqlite_utils import Database  # noqa: PLC0415 (see the module's docstring)

    db = Database(sqlite3.connect(str(path), timeout=10.0), execute_plugins=False)
    try:
        db.enable_wal()
        db.execute("PRAGMA synchronous = FULL")
        migrations().apply(db)
    finally:
        db.close()


def _damage(path: Path) -> str | None:
    """Why the file at `path` cannot be used, or None (also for a file not there yet)."""
    if not path.exists():
        return None
    try:
        # Read-only: a read-write connection to a damaged file can delete its -wal on
        # close, and the -wal may hold the last committed taps.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        raise  # locked or not openable: not damage, and nothing to move
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows != [("ok",)]:
        return "; ".join(str(row[0]) for row in rows[:3])
    return None


def _move_aside(path: Path, now: datetime, problem: str) -> str:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{target}{suffix}")
    log.critical(
        "tap database damaged, moved aside and a new one started path=%s moved_to=%s problem=%s",
        path,
        target,
        problem,
    )
    return f"{iso(now)} {target}: {problem}"


def _columns(decision: Decision) -> tuple[int | None, str, str | None]:
    if decision.ignored_reason is not None:
        return None, "ignored", decision.ignored_reason
    return decision.checktype, "pending", None


def _tap(row: Sequence[Any]) -> Tap:
    seq, tap_id, card_no, reader, gate, direction, checktype, state, reason, at, attempts = row
    return Tap(
        seq, tap_id, card_no, reader, gate, direction, checktype, state, reason,
        parse_iso(at), attempts,
    )  # fmt: skip


def _settling(answer: Answer, at: str) -> tuple[str, tuple[Any, ...]]:
    outcome = answer.outcome
    if isinstance(outcome, Delivered):
        return (
            "UPDATE taps SET state = 'delivered', reason = ?, student_name = ?,"
            " attendance_status = ?, attempts = attempts + 1, settled_at = ? WHERE seq = ?",
            (
                "duplicate" if outcome.duplicate else None,
                outcome.student_name,
                outcome.attendance_status,
                at,
                answer.seq,
            ),
        )
    if isinstance(outcome, Rejected):
        return (
            "UPDATE taps SET state = 'rejected', reason = ?, last_error = ?,"
            " attempts = attempts + 1, settled_at = ? WHERE seq = ?",
            (outcome.reason, f"{outcome.status} {outcome.message}".strip(), at, answer.seq),
        )
    error = outcome.state if isinstance(outcome, Paused) else outcome.reason
    assert isinstance(outcome, Paused | Retry)
    return (
        "UPDATE taps SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
        (f"{error}: {outcome.message}".rstrip(": "), answer.seq),
    )
