"""From a reader's raw read to a recorded tap (SPEC "Data flow").

    raw -> normalize (card_format) -> debounce (all readers) -> writer thread: record (commit)

`Recorder.read()` is called by the reader threads for every frame they decoded.
Garbage never becomes a tap and never raises. A tap that passes is handed to the writer
thread, which decides its direction and commits it on its own SQLite connection, one
commit per tap and in the order the taps were read; the event loop hears of each
recorded tap (`on_recorded`) and logs it. The event loop is not on the way from a read
to its commit: a busy loop (uploads) does not delay recording, and a slow fsync does
not delay the loop (benchmarks/ingest.py).

When the disk is full, or the database cannot be opened yet (`opened()` not called:
the daemon could not open it at start), the writer keeps the taps in memory, in order,
and records them as soon as the database takes them again.

The writer is the one owner of held taps (SPEC "Time", issue 11): it releases this
boot's held taps, whichever process of the boot recorded them, when the daemon sees the
clock synchronize (`release_held()`) and before it decides any tap read with a
synchronized clock, so a later tap of a held card never overtakes it or misses its
check-in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from gateagent.clock import Clock
from gateagent.config import Config, Reader
from gateagent.core.cards import InvalidCard, normalize
from gateagent.core.debounce import Debouncer
from gateagent.errors import StoreError
from gateagent.handoff import Handoff
from gateagent.logs import Repeats
from gateagent.store import NewTap, Store, Tap

log = logging.getLogger(__name__)

# Taps kept in memory while the disk is full: a day at a large school, ~100 bytes each.
UNSAVED_MAX = 50_000
SYNC_CHECK_S = 1.0
# Seconds between attempts to commit while the disk is full.
RETRY_S = 1.0
# One attempt to commit waits at most for SQLite's busy timeout (10 s) and an fsync;
# a writer inside one attempt for longer than this is stuck (a hung disk).
STUCK_S = 30.0


@dataclass(frozen=True)
class _Release:
    """Release this boot's held taps (the clock synchronized), in line with the taps."""

    boot_id: str
    tz: ZoneInfo
    min_checkout_after_s: float


Spawn = Callable[[str, Callable[[], None], threading.Event], threading.Thread]


class _Job(NamedTuple):
    """A tap to commit, with the settings in force when it was read (a named tuple: one
    per tap, and cheaper to make than a frozen dataclass)."""

    tap: NewTap
    tz: ZoneInfo
    min_checkout_after_s: float
    hold: bool


class Recorder:
    def __init__(
        self,
        path: Path,
        settings: Config,
        clock: Clock,
        on_recorded: Callable[[Tap], None] = lambda tap: None,
        on_released: Callable[[int], None] = lambda count: None,
        *,
        on_unreadable: Callable[[Reader], None] = lambda reader: None,
    ) -> None:
        self._path = path
        self._clock = clock
        self._on_recorded = on_recorded
        self._on_released = on_released
        # In the reader's thread, for a read that is not a card number (feedback).
        self._on_unreadable = on_unreadable
        self._repeats = Repeats(log)
        self.settings = settings
        # `[device] timezone` as a ZoneInfo, made once per configuration, not per tap.
        self._tz = settings.device.tz
        self._debouncer = Debouncer(settings.taps.debounce)
        # read() runs in every reader's thread: the debouncer and the sync cache are
        # shared between readers (a card bouncing from one reader to another is one tap).
        self._reading = threading.Lock()
        self._synced = False
        self._synced_at = float("-inf")
        self._jobs: queue.SimpleQueue[_Job | _Release | None] = queue.SimpleQueue()
        # Set once the daemon opened (created, upgraded) the database, or at close.
        self._go = threading.Event()
        # Taps read (counted under _reading) and recorded (counted on the loop): each
        # counter has one writer at a time, and their difference is what waits.
        self._taken = 0
        self._recorded_count = 0
        self._failing = False
        self._last_error: Exception | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt_since: float | None = None

    def start(self, spawn: Spawn | None = None, *, opened: bool = True) -> None:
        """Start the writer thread; call on the event loop that hears of recorded taps.

        `spawn(name, run, stop)` starts it (the daemon's supervisor, which restarts it
        after an unexpected error); without it, a plain thread. With `opened=False` the
        writer keeps taps in memory until `opened()`.
        """
        loop = asyncio.get_running_loop()
        recorded = Handoff(loop, self._recorded)
        if opened:
            self._go.set()

        def write() -> None:
            self._write(loop, recorded)

        if spawn is None:
            self._thread = threading.Thread(target=write, name="recorder", daemon=True)
            self._thread.start()
        else:
            self._thread = spawn("recorder", write, self._closing)

    def opened(self) -> None:
        """The database is open (created, upgraded): commit the taps kept meanwhile."""
        self._go.set()

    def release_held(self) -> None:
        """The clock synchronized: release this boot's held taps (in the writer thread,
        in line with the taps read before this call)."""
        settings = self.settings
        self._jobs.put(
            _Release(self._clock.boot_id(), settings.device.tz, settings.taps.min_checkout_after)
        )

    async def close(self) -> None:
        """Commit every tap read so far (unless the disk is still full), then stop."""
        with self._reading:  # a read in progress puts its tap before the end mark
            self._closing.set()
            self._jobs.put(None)
        self._go.set()  # a database never opened: the writer makes its last try anyway
        if self._thread is not None:
            # In an executor, so the loop keeps running the writer's last callbacks
            # (their log lines) while it finishes; they all come before this returns.
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        if self.unsaved:
            log.critical(
                "taps not recorded at stop count=%d error=%s",
                self.unsaved,
                _describe(self._last_error) if self._last_error else "-",
            )

    def alive(self) -> bool:
        """The writer thread runs and is not stuck in one commit (systemd's watchdog)."""
        since = self._attempt_since
        stuck = since is not None and time.monotonic() - since > STUCK_S
        return self._thread is not None and self._thread.is_alive() and not stuck

    def reconfigure(self, settings: Config) -> None:
        with self._reading:
            self.settings = settings
            self._tz = settings.device.tz
            self._debouncer.set_window(settings.taps.debounce)

    @property
    def unsaved(self) -> int:
        return self._taken - self._recorded_count

    def read(self, reader: Reader, raw: str) -> bool:
        """One card read by `reader`: True if it goes to be recorded (not garbage or a
        repeat). Called from the reader threads."""
        with self._reading:
            return self._take(reader, raw)

    def _take(self, reader: Reader, raw: str) -> bool:
        taps = self.settings.taps
        card_no = normalize(raw, taps.card_format, taps.reverse_bytes)
        if isinstance(card_no, InvalidCard):
            log.warning(
                "read dropped: not a card number reader=%s reason=%s raw=%r",
                reader.name,
                card_no.reason,
                raw[:40],
            )
            self._on_unreadable(reader)
            return False
        at_mono = self._clock.now_mono()
        if self._debouncer.seen(card_no, at_mono):
            log.debug("read repeated card_no=%s reader=%s", card_no, reader.name)
            return False
        if self._closing.is_set():
            return False
        if self.unsaved >= UNSAVED_MAX:
            log.critical("tap lost: disk full and memory buffer full card_no=%s", card_no)
            return False
        synced = self._synchronized(at_mono)
        clock = self._clock
        # Positional: a named tuple takes them at half the cost of keywords.
        tap = NewTap(
            _tap_id(), card_no, reader.name, reader.gate, reader.direction, clock.now_utc(),
            at_mono, clock.boot_id(), synced,
        )  # fmt: skip
        hold = self.settings.device.require_clock_sync and not synced
        self._taken += 1
        self._jobs.put(_Job(tap, self._tz, taps.min_checkout_after, hold))
        return True

    def _synchronized(self, now_mono: float) -> bool:
        # Asked at most once a second: it costs a stat and a system call, and a tap
        # marked unsynchronized just after the sync is released (corrected) at once.
        if now_mono - self._synced_at >= SYNC_CHECK_S or now_mono < self._synced_at:
            self._synced = self._clock.synchronized()
            self._synced_at = now_mono
        return self._synced

    # -- the writer thread ---------------------------------------------------------

    def _write(self, loop: asyncio.AbstractEventLoop, recorded: Handoff[Tap]) -> None:
        # Taps wait in the queue (in memory, counted in `unsaved`) until the database
        # is open.
        self._go.wait()
        store: Store | None = None
        # The boot whose held taps may wait for a release; None once released. This
        # boot at start: a process of this boot before us may have left some.
        held_boot: str | None = self._clock.boot_id()
        try:
            while (job := self._jobs.get()) is not None:
                if isinstance(job, _Release):
                    store, held_boot = self._release_now(loop, store, job, held_boot)
                    continue
                committed = self._commit(loop, store, job, held_boot)
                if committed is None:
                    return  # the last try, made after the stop began, failed too
                store, tap = committed
                held_boot = (
                    None if held_boot == job.tap.boot_id and job.tap.clock_synced else held_boot
                )
                recorded.put(tap)
                if tap.state == "held":
                    held_boot = job.tap.boot_id
                    if self._clock.synchronized():
                        # Read before the clock synchronized, committed after: release
                        # it now rather than wait for the next tap.
                        release = _Release(job.tap.boot_id, job.tz, job.min_checkout_after_s)
                        store, held_boot = self._release_now(loop, store, release, held_boot)
        finally:
            if store is not None:
                store.close()

    def _commit(
        self, loop: asyncio.AbstractEventLoop, store: Store | None, job: _Job, held_boot: str | None
    ) -> tuple[Store, Tap] | None:
        """Record one tap, trying again until it is (or the stop's last try failed)."""
        while True:
            self._attempt_since = time.monotonic()
            try:
                store = store or Store.connect(self._path)
                if held_boot == job.tap.boot_id and job.tap.clock_synced:
                    # Read with a synchronized clock: this boot's held taps are released
                    # first, so this tap's direction counts them and it does not
                    # overtake them.
                    self._release(loop, store, job.tap.boot_id, job.tz, job.min_checkout_after_s)
                return store, store.record(job.tap, job.tz, job.min_checkout_after_s, job.hold)
            except Exception as exc:  # a full disk, a lock held too long, or a bug
                # The tap is not recorded yet: it stays first in line and is tried again
                # on a new connection; reading goes on meanwhile.
                loop.call_soon_threadsafe(self._failed, exc)
                if store is not None:
                    store.close()
                    store = None
            finally:
                self._attempt_since = None
            if self._closing.is_set():
                return None
            self._closing.wait(RETRY_S)

    def _release_now(
        self,
        loop: asyncio.AbstractEventLoop,
        store: Store | None,
        job: _Release,
        held_boot: str | None,
    ) -> tuple[Store | None, str | None]:
        """One try; if it fails, the next tap read with a synchronized clock tries again."""
        try:
            store = store or Store.connect(self._path)
            self._release(loop, store, job.boot_id, job.tz, job.min_checkout_after_s)
        except Exception as exc:
            loop.call_soon_threadsafe(self._failed_release, exc)
            if store is not None:
                store.close()
            return None, job.boot_id
        return store, None if held_boot == job.boot_id else held_boot

    def _release(
        self,
        loop: asyncio.AbstractEventLoop,
        store: Store,
        boot_id: str,
        tz: ZoneInfo,
        min_checkout_after_s: float,
    ) -> None:
        released = store.release_held(
            boot_id, self._clock.now_utc(), self._clock.now_mono(), tz, min_checkout_after_s
        )
        if released:
            loop.call_soon_threadsafe(self._on_released, released)

    # -- back on the loop -----------------------------------------------------------

    def _failed(self, error: Exception) -> None:
        if not self._failing and not isinstance(error, StoreError):
            log.error("recording a tap failed", exc_info=error)  # the traceback once
        self._failing = True
        self._last_error = error
        self._repeats.report(
            "store",
            logging.CRITICAL,
            f"{_describe(error)}: taps kept in memory and retried unsaved={self.unsaved}",
            self._clock.now_mono(),
        )

    def _failed_release(self, error: Exception) -> None:
        self._repeats.report(
            "release",
            logging.ERROR,
            f"held taps not released yet ({_describe(error)}): tried again before the next tap",
            self._clock.now_mono(),
        )

    def _recorded(self, tap: Tap) -> None:
        self._recorded_count += 1
        log.info(
            "tap recorded card_no=%s reader=%s checktype=%s state=%s%s",
            tap.card_no,
            tap.reader,
            tap.checktype if tap.checktype is not None else "-",
            tap.state,
            f" reason={tap.reason}" if tap.reason else "",
        )
        if self._failing:
            self._failing = False
            self._repeats.resolve(
                "store", "the database takes taps again: kept taps recorded", self._clock.now_mono()
            )
        self._on_recorded(tap)


# The digit that carries the RFC 4122 variant (binary 10xx) for each random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _tap_id() -> str:
    """A random UUID (version 4) as text, as `str(uuid.uuid4())` makes it, at a quarter
    of its cost: uuid.UUID's checks and conversions were a third of a read's work."""
    digits = os.urandom(16).hex()
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{_VARIANT[digits[16]]}{digits[17:20]}"
        f"-{digits[20:]}"
    )


def _describe(error: Exception) -> str:
    return str(error) if isinstance(error, StoreError) else f"{type(error).__name__}: {error}"
