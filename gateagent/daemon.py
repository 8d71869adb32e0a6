"""`gateagent run`: wiring the readers, the store and the uploader on one event loop.

    reader threads --read--> Recorder (normalize, debounce) --writer thread--> SQLite
                                      \\--recorded (on the loop)--> Uploader --> server

Readers block in their own threads and hand reads to the recorder, whose writer thread
commits the taps on its own SQLite connection and tells the loop. The event loop never
waits on SQLite (issue 11): what the daemon itself writes (meta, reader health, the
readers of a reload, retention) goes through a `DbThread`, so another writer holding
the database (a `requeue`, a `sqlite3` shell, a backup) delays those writes, never the
uploads, the signals or the watchdog.

Every task and thread runs under the `Supervisor` (gateagent/supervise.py): an
unexpected error is logged once with its traceback and the component restarted after a
backoff. A database that cannot be opened or written at start (full disk, locked,
unwritable folder) does not stop the daemon: the readers read, the recorder keeps the
taps in memory, `critical` is logged once, and the database is opened and the taps
committed as soon as it can be.

Signals: SIGTERM/SIGINT finish the requests in flight, commit and exit 0; SIGHUP re-reads
the configuration, which takes effect whole or not at all. systemd hears READY=1 once the
database is open (or, if it cannot be, once the readers read without it), a one-line
STATUS=, and WATCHDOG=1 while every component runs or is being restarted.

Start-up is as short as recording allows: the readers and the writer start first, and
what recording never needs is imported only after READY=1: the uploader (httpx, its
client and TLS context) and the metrics (prometheus_client, only when [metrics] has a
textfile or listen), which were a quarter of the instructions to READY=1
(benchmarks/startup.py, README "Performance").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from gateagent import config, heap
from gateagent.clock import Clock
from gateagent.config import Config, Reader
from gateagent.core.answers import Outcome, Retry
from gateagent.dbthread import DbThread
from gateagent.errors import ConfigError, GateagentError, StoreError
from gateagent.feedback import Feedback
from gateagent.logs import Repeats
from gateagent.notify import Notifier
from gateagent.readers import source_for
from gateagent.readers.base import Source
from gateagent.recorder import Recorder
from gateagent.store import Store, Tap, iso
from gateagent.supervise import Supervisor

if TYPE_CHECKING:
    from gateagent.metrics import Exporter
    from gateagent.uplink.client import Uploader

log = logging.getLogger(__name__)

T = TypeVar("T")

# STATUS= and the clock check are at most this late; an idle gate wakes this seldom
# (benchmarks/idle.py: a 1 s tick cost 0.13 % CPU, this 0.05 %).
HOUSEKEEPING_S = 5.0
PURGE_EVERY_S = 3600.0
# The queue's counts (STATUS=) are read again at least this often, without a change seen.
COUNTS_MAX_AGE_S = 60.0
# A component the supervisor could not bring back for this long is not healing:
# WATCHDOG=1 stops, and systemd restarts the whole daemon.
DOWN_LIMIT_S = 60.0
# READY=1 waits this long at most for the database: beyond it, systemd's start timeout
# (30 s) would restart a daemon whose readers are reading fine.
READY_WAIT_S = 5.0
# At stop, the last state written waits at most this long (the unit's stop timeout is
# 20 s, and the recorder's last try and the requests in flight come first).
STOP_WRITE_S = 3.0
# Taps recorded before the uploader exists, kept to hand it (the rest wait for a sweep).
EARLY_TAPS = 500
# Retries of the database at start and of a reload's writes: quick at first, then twice
# a minute (tenacity's full-jitter exponential, as core/backoff.py for the server).
DB_RETRY = wait_random_exponential(multiplier=0.5, max=30.0)

# name, connected, last_error
Row = tuple[str, bool, str | None]


@dataclass
class _Running:
    """One configured reader: the event that stops its thread, and its health."""

    config: Reader
    stop: threading.Event = field(default_factory=threading.Event)
    connected: bool = False
    last_error: str | None = "starting"


def _write_state(
    store: Store, meta: dict[str, str], rows: Sequence[Row], keep: Sequence[str] | None
) -> None:
    """The daemon's state as `status` reads it (in the DbThread)."""
    for key, value in meta.items():
        store.set_meta(key, value)
    if keep is not None:
        store.forget_readers(keep)
    for name, connected, error in rows:
        store.set_reader(name, connected, error)


class Daemon:
    def __init__(
        self,
        config_path: str,
        settings: Config,
        clock: Clock,
        *,
        notifier: Notifier | None = None,
        sources: Callable[[Reader], Source] | None = None,
    ) -> None:
        self._path = config_path
        self.settings = settings
        self._clock = clock
        self._notifier = notifier or Notifier(None)
        # A read a reader drops as garbage is "unreadable" at the gate too (issue 15).
        self._sources = sources or partial(source_for, on_garbage=self._garbage)
        self._readers: dict[str, _Running] = {}
        self._repeats = Repeats(log)
        self._supervisor = Supervisor()
        self._synced: bool | None = None
        self._uploader: Uploader | None = None
        self._early: list[Tap] = []  # recorded before the uploader was made
        self._metrics: Exporter | None = None
        # The time of the latest answer from the API since start (status's
        # uplink_answered_at), and the one last handed to the publisher.
        self._answered_at: str | None = None
        self._answered_published: str | None = None
        self._counts: dict[str, int] | None = None
        # Store.watermarks() when the database was opened: where the metrics count from.
        self._since: tuple[int, str] | None = None
        self._counts_stale = True
        self._counts_until = 0.0
        self._opened = asyncio.Event()
        # What is still to be written for status: meta keys and reader names.
        self._meta: dict[str, str] = {}
        self._dirty: set[str] = set()
        # Readers a reload is about to stop: not published any more (their rows go).
        self._removing: set[str] = set()
        self._publish_wanted = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        settings = self.settings
        loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self._stop_requested)
        loop.add_signal_handler(signal.SIGINT, self._stop_requested)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        self._db = DbThread(settings.storage.path, "daemon-db")
        self._feedback = Feedback(settings)  # opens nothing yet: see its start() below
        self._recorder = Recorder(
            settings.storage.path,
            settings,
            self._clock,
            on_recorded=self._recorded,
            on_released=self._released,
            on_unreadable=lambda reader: self._feedback.unreadable(reader.name),
        )
        # The writer keeps taps in memory until the database is open; the readers read
        # from the start either way (SPEC: never wait to start reading).
        self._recorder.start(self._supervisor.thread, opened=False)
        self._start_readers(settings.readers)
        # After the readers: the outputs open in the player's own thread, so a GPIO slow
        # to open never delays a tap; a signal given meanwhile waits for them.
        self._feedback.start()
        supervise = self._supervisor.task
        self._tasks["database"] = supervise("database", self._opening, stopping)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._opened.wait(), READY_WAIT_S)
        self._check_clock()
        self._notify_status()
        self._notifier.ready()
        counts = self._counts or {}
        _warn_of_clear_text(settings)
        log.info(
            "gateagent started device=%s readers=%d pending=%s held=%s profile=%s",
            settings.device.name,
            len(settings.readers),
            counts.get("pending", "-"),
            counts.get("held", "-"),
            settings.uplink.profile,
        )
        # After READY=1: recording needs neither (the module's docstring). The uploader
        # sends what was recorded meanwhile: it starts from the database.
        self._tasks["uploader"] = supervise("uploader", self._uploading, stopping)
        if _wants_metrics(self.settings):
            self._start_metrics()
        # What start-up made (modules, the configuration, pools) lives as long as the
        # process: out of the collector's sight, a burst of taps waiting for their commit
        # no longer makes each full collection walk all of it again (issue 14). Not
        # collected first: start-up leaves a few dozen cyclic objects behind, and a full
        # collection would hold the loop up 20 ms here.
        gc.freeze()
        self._tasks["watchdog"] = supervise("watchdog", self._watching, stopping)
        self._tasks["housekeeping"] = supervise("housekeeping", self._housekeeping, stopping)
        self._tasks["publisher"] = supervise("publisher", self._publishing, stopping)
        await stopping.wait()
        return await self._stop()

    def _stop_requested(self) -> None:
        self._stopping.set()
        self._publish_wanted.set()  # the publisher ends; the last state is written below

    async def _stop(self) -> int:
        self._notifier.stopping()
        log.info("gateagent stopping: finishing requests in flight")
        for running in self._readers.values():
            running.stop.set()
        # What may be waiting for the database ends now (the state still to write is
        # written below, once); the uploader and the watchdog return on `stopping`.
        if self._reloading is not None:
            self._reloading.cancel()
        for name in ("database", "housekeeping", "publisher"):
            self._tasks[name].cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._recorder.close()
        await asyncio.to_thread(self._feedback.close)  # outputs off, pins released
        pending: object = "-"
        if self._opened.is_set():
            rows = [(name, False, "gateagent stopped") for name in self._readers]
            self._publish_answered()
            meta = {**self._meta, "pid": "", "stopped_at": iso(datetime.now(UTC))}

            def last(store: Store) -> int:
                _write_state(store, meta, rows, None)
                return store.counts()["pending"]

            try:
                pending = await asyncio.wait_for(self._db.call(last), STOP_WRITE_S)
            except (GateagentError, TimeoutError) as exc:
                log.error("the daemon's last state not written: %s", exc or "timed out")
        # The last state, after the readers' last taps: a stale file then says we are gone.
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.stop)
        log.info("gateagent stopped pending=%s", pending)
        await self._db.close()
        return 0

    # -- the database ------------------------------------------------------------------

    async def _opening(self) -> None:
        """Open the database, retried until it can be; then the writer and the uploader go."""
        async for attempt in AsyncRetrying(
            wait=DB_RETRY,
            retry=retry_if_exception_type(StoreError),
            before_sleep=self._open_failed,
        ):
            with attempt:
                await self._open()

    def _open_failed(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self._repeats.report(
            "database",
            logging.CRITICAL,
            f"tap database cannot be used: {error}; readers keep reading, taps are kept in"
            f" memory and recorded once it can be (unsaved={self._recorder.unsaved})",
            time.monotonic(),
        )

    async def _open(self) -> None:
        settings = self.settings
        boot = self._clock.boot_id()
        meta = {
            **self._decision_meta(settings),
            "device": settings.device.name,
            "pid": str(os.getpid()),
            # Not the last run's uplink state or message.
            "uplink_state": "ok",
            "uplink_message": "",
            "uplink_state_since": iso(datetime.now(UTC)),
            # "" until the API answered a request of this run: "ok" alone is no answer.
            "uplink_answered_at": "",
        }
        rows = self._rows(self._readers)
        names = list(self._readers)

        def prepare() -> tuple[dict[str, int], int, tuple[int, str]]:
            store = Store.open(settings.storage.path)
            try:
                unknown = store.mark_clock_unknown(boot)
                _write_state(store, meta, rows, names)
                return store.counts(), unknown, store.watermarks()
            finally:
                store.close()

        counts, unknown, self._since = await asyncio.to_thread(prepare)
        if unknown:
            log.warning(
                "held taps of an earlier boot cannot be corrected reason=clock-unknown count=%d"
                " (gateagent requeue --held, or --drop)",
                unknown,
            )
        self._counts = counts
        self._opened.set()
        self._recorder.opened()
        self._publish_wanted.set()
        self._repeats.resolve(
            "database", "tap database open: taps kept in memory are recorded now", time.monotonic()
        )

    async def _uploading(self) -> None:
        """The uploader, once the database is open (or never, if the daemon stops first)."""
        if self._uploader is None:
            opened = asyncio.ensure_future(self._opened.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait((opened, stopping), return_when=asyncio.FIRST_COMPLETED)
            finally:
                opened.cancel()
                stopping.cancel()
            if self._stopping.is_set():
                return
            await _import_aside("gateagent.uplink.client")
            from gateagent.uplink.client import Uploader  # noqa: PLC0415 (after READY=1)

            self._uploader = Uploader(
                self.settings.storage.path,
                self.settings,
                on_state=self._state,
                on_answer=self._answered,
            )
            for tap in self._early:
                self._uploader.wake(tap)
            self._early.clear()
            self._notify_status()
        await self._uploader.run(self._stopping)

    def _start_metrics(self) -> None:
        """The exporter (the textfile and /metrics, README "Monitoring many gates"), made
        by a supervised task: a failure to import or start it (a broken prometheus_client)
        is logged and retried (named in STATUS= while down), never the end of the daemon or
        of a reload. Once: a reload while it is being made changes it when it is made."""
        running = self._tasks.get("metrics")
        if running is None or running.done():
            self._tasks["metrics"] = self._supervisor.task(
                "metrics", self._making_metrics, self._stopping
            )

    async def _making_metrics(self) -> None:
        await _import_aside("gateagent.metrics")  # after READY=1, off the loop
        from gateagent.metrics import Exporter  # noqa: PLC0415 (only when wanted)

        settings = self.settings
        if not _wants_metrics(settings):
            return  # turned off by a reload meanwhile
        # Counting from the database's opening: the taps recorded and delivered while the
        # exporter was being made count too (None if it was not open yet).
        exporter = Exporter(settings, unsaved=lambda: self._recorder.unsaved, since=self._since)
        # Collecting reads the database: never on the loop.
        await asyncio.to_thread(exporter.start)
        self._metrics = exporter
        if self.settings is not settings:
            exporter.reconfigure(self.settings)  # reloaded while it started

    def _decision_meta(self, settings: Config) -> dict[str, str]:
        # `requeue --held` decides a tap's direction as the daemon does (store.requeue).
        return {
            "timezone": settings.device.timezone,
            "min_checkout_after_s": str(settings.taps.min_checkout_after),
        }

    async def _retrying(self, key: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until the database takes it; each failure reported (once, then summed)."""

        def failed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self._repeats.report(key, logging.ERROR, f"{what}: {error}", time.monotonic())

        async for attempt in AsyncRetrying(
            wait=DB_RETRY, retry=retry_if_exception_type(StoreError), before_sleep=failed
        ):
            with attempt:
                result = await call()
        self._repeats.resolve(key, f"{what}: done", time.monotonic())
        return result

    # -- what status reads ---------------------------------------------------------------

    def _set_meta(self, **values: str) -> None:
        self._meta.update(values)
        self._publish_wanted.set()

    def _rows(self, readers: dict[str, _Running]) -> list[Row]:
        return [(name, r.connected, r.last_error) for name, r in readers.items()]

    async def _publishing(self) -> None:
        """The one writer of the daemon's state for status, through the DbThread; what
        could not be written is kept (the newest value of each) and written later."""
        while True:
            await self._publish_wanted.wait()
            if self._stopping.is_set():
                return
            await self._opened.wait()
            self._publish_wanted.clear()
            meta, self._meta = self._meta, {}
            names = self._dirty - self._removing
            self._dirty -= names
            rows = self._rows({n: self._readers[n] for n in names if n in self._readers})
            try:
                await self._db.call(partial(_write_state, meta=meta, rows=rows, keep=None))
            except asyncio.CancelledError:
                # The stop: it writes what is still to be written, this too.
                self._meta = {**meta, **self._meta}
                raise
            except StoreError as exc:
                self._meta = {**meta, **self._meta}
                self._dirty |= names
                self._repeats.report(
                    "publish", logging.ERROR, f"status not written: {exc}", time.monotonic()
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                self._publish_wanted.set()
            else:
                self._repeats.resolve("publish", "status written again", time.monotonic())

    # -- readers -------------------------------------------------------------------------

    def _start_readers(
        self, readers: list[Reader], sources: dict[str, Source] | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        for reader in readers:
            running = _Running(reader)
            self._readers[reader.name] = running
            given = (sources or {}).get(reader.name)

            def emit(raw: str, running: _Running = running) -> None:
                if not running.stop.is_set():
                    self._recorder.read(running.config, raw)

            def health(ok: bool, error: str | None, running: _Running = running) -> None:
                loop.call_soon_threadsafe(self._health, running, ok, error)

            def read(
                running: _Running = running,
                given: Source | None = given,
                emit: Callable[[str], None] = emit,
                health: Callable[[bool, str | None], None] = health,
            ) -> None:
                try:
                    # Made here, so a reader that cannot even be set up is retried too.
                    source = given or self._sources(running.config)
                    source.run(emit, health, running.stop)
                except Exception as exc:
                    health(False, f"reader stopped: {type(exc).__name__}: {exc}")
                    raise

            # hid and serial readers never end on their own; a stdin reader ends with
            # its input.
            self._supervisor.thread(
                f"reader {reader.name}",
                read,
                running.stop,
                restart_on_return=reader.kind != "stdin",
            )

    def _garbage(self, reader: str, garbage: object) -> None:
        self._feedback.unreadable(reader)  # in the reader's thread; never blocks

    def _recorded(self, tap: Tap) -> None:
        self._counts_stale = True
        self._feedback.recorded(tap)
        if self._uploader is not None:
            self._uploader.wake(tap)
        elif len(self._early) < EARLY_TAPS:
            # For the uploader, which starts after READY=1: a fresh tap goes first.
            self._early.append(tap)

    def _answered(self, tap: Tap, outcome: Outcome) -> None:
        self._counts_stale = True
        if _is_answer(outcome):
            first = self._answered_at is None
            self._answered_at = iso(datetime.now(UTC))
            # The first answer at once (status stops saying "nothing sent"); later ones
            # with a change of state (written anyway) or the next housekeeping tick, so
            # the database is not written once per answer.
            if first or "uplink_state" in self._meta:
                self._publish_answered()
        # Through self: a reload may replace the feedback's outputs.
        self._feedback.answer(tap, outcome)

    def _health(self, running: _Running, ok: bool, error: str | None) -> None:
        if running.stop.is_set() or (ok, error) == (running.connected, running.last_error):
            return
        running.connected, running.last_error = ok, error
        name = running.config.name
        if ok:
            log.info("reader connected reader=%s", name)
        else:
            log.warning("reader disconnected reader=%s error=%s", name, error)
        self._dirty.add(name)
        self._publish_wanted.set()

    # -- configuration -------------------------------------------------------------------

    def _request_reload(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            # Not applied yet (it waits for the database): the newer file wins.
            self._reloading.cancel()
        self._reloading = self._supervisor.task("reload", self._reload, self._stopping)

    async def _reload(self) -> None:
        """Take the new configuration whole or not at all: the readers' table is written
        first (retried while the database is busy, the running configuration untouched
        meanwhile); then the change is applied in memory, where nothing can fail."""
        try:
            new = config.load(self._path)
        except ConfigError as exc:
            log.error("new configuration refused, the running one is kept: %s", exc)
            return
        if new.storage.path != self.settings.storage.path:
            log.warning(
                "storage path changed: it takes effect after a restart path=%s", new.storage.path
            )
        wanted = {reader.name: reader for reader in new.readers}
        stopping = [name for name, r in self._readers.items() if wanted.get(name) != r.config]
        changed = [r for name, r in wanted.items() if name in stopping or name not in self._readers]
        kept = {name: r for name, r in self._readers.items() if name not in stopping}
        rows = [*self._rows(kept), *((r.name, False, "starting") for r in changed)]
        if self._opened.is_set():
            write = partial(
                _write_state, meta=self._decision_meta(new), rows=rows, keep=list(wanted)
            )
            self._removing = set(stopping)
            try:
                await self._retrying(
                    "reload",
                    "new configuration waits for the database",
                    lambda: self._db.call(write),
                )
            finally:
                self._removing = set()
        else:
            self._meta.update(self._decision_meta(new))  # _open writes the readers
        # Applied in one step of the loop: no await from here on.
        if self._uploader is not None:
            self._uploader.reconfigure(new)
        if self._metrics is not None:
            self._metrics.reconfigure(new)
        elif _wants_metrics(new):
            self._start_metrics()  # off until now; it starts with `new`, set just below
        self.settings = new
        self._recorder.reconfigure(new)
        self._reconfigure_feedback(new)
        for name in stopping:
            self._readers.pop(name).stop.set()
            self._dirty.discard(name)
        self._start_readers(changed)
        log.info("configuration reloaded path=%s readers_restarted=%d", self._path, len(changed))
        _warn_of_clear_text(new)

    def _reconfigure_feedback(self, new: Config) -> None:
        # Never blocks the loop: the old outputs release their pins and the new ones open
        # in the players' threads, in that order; the verdicts awaited are forgotten.
        leds = [(r.name, r.path, r.feedback_led) for r in new.readers]
        if (new.feedback, leds) == (self._feedback.settings.feedback, self._feedback.leds):
            return
        self._feedback = self._feedback.replaced(new)

    # -- housekeeping --------------------------------------------------------------------

    def _tick_s(self) -> float:
        interval = self._notifier.watchdog_interval_s()
        return min(HOUSEKEEPING_S, interval) if interval else HOUSEKEEPING_S

    async def _watching(self) -> None:
        """STATUS= and WATCHDOG=1, from memory only: a busy database never delays them."""
        tick = self._tick_s()
        while not self._stopping.is_set():
            now = time.monotonic()
            if self._uploader is not None:
                self._uploader.tick()
            self._repeats.tick(now)
            self._supervisor.tick(now)
            self._notify_status()
            if self._alive():
                self._notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=tick)

    async def _housekeeping(self) -> None:
        """The clock check, retention and the counts for STATUS=; a database error is
        reported and tried again at the next tick, never the end of this loop."""
        next_purge = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            self._check_clock()
            self._publish_answered()
            if self._opened.is_set():
                try:
                    if now >= next_purge:
                        await self._purge()
                        next_purge = now + PURGE_EVERY_S
                    # Counted again only when taps may have changed (or a minute passed,
                    # for a `requeue` by another process): an idle gate skips the query.
                    if self._counts_stale or now >= self._counts_until:
                        self._counts_stale = False
                        self._counts_until = now + COUNTS_MAX_AGE_S
                        self._counts = await self._db.call(lambda store: store.counts())
                except StoreError as exc:
                    self._repeats.report("housekeeping", logging.ERROR, str(exc), now)
                else:
                    self._repeats.resolve("housekeeping", "housekeeping works again", now)
            # At its own interval; also while the database is not open (a gate that reads).
            if self._metrics is not None:
                await asyncio.to_thread(self._metrics.tick, now)
            # What the last tick's work freed goes back to the system (gateagent/heap.py).
            heap.trim()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=HOUSEKEEPING_S)

    def _alive(self) -> bool:
        """WATCHDOG=1 only while every component runs or is being restarted: the
        supervisor's tasks and threads (a component it cannot bring back within
        DOWN_LIMIT_S counts as stuck), the uploader (no request far past its deadline, no
        database call hung) and the recorder's writer (not stuck in one commit).
        Otherwise systemd restarts us."""
        down = self._supervisor.down()
        stuck = sorted(name for name, seconds in down.items() if seconds > DOWN_LIMIT_S)
        if self._uploader is not None and not self._uploader.alive():
            stuck.append("uploader")
        if not self._recorder.alive():
            stuck.append("recorder")
        now = time.monotonic()
        if stuck:
            self._repeats.report(
                "watchdog",
                logging.CRITICAL,
                f"not alive: {', '.join(stuck)}; systemd's watchdog will restart gateagent",
                now,
            )
        elif down:
            self._repeats.report(
                "watchdog", logging.ERROR, f"down, restarting: {', '.join(sorted(down))}", now
            )
        else:
            self._repeats.resolve("watchdog", "every component runs again", now)
        return not stuck

    def _check_clock(self) -> None:
        settings = self.settings
        synced = self._clock.synchronized()
        if synced == self._synced:
            return
        self._synced = synced
        self._set_meta(clock_synchronized="1" if synced else "0")
        if not synced:
            if settings.device.require_clock_sync:
                self._repeats.report(
                    "clock",
                    logging.WARNING,
                    "clock not synchronized: taps are held until it is",
                    self._clock.now_mono(),
                )
            return
        self._repeats.resolve("clock", "clock synchronized", self._clock.now_mono())
        # The writer releases them, in line with the taps (recorder.py).
        self._recorder.release_held()

    def _released(self, count: int) -> None:
        self._counts_stale = True
        log.info("held taps corrected and released count=%d", count)
        if self._uploader is not None:
            self._uploader.rescan()

    async def _purge(self) -> None:
        storage = self.settings.storage
        now = datetime.now(UTC)
        deleted = await self._db.call(
            lambda store: store.purge(now, storage.keep_sent, storage.keep_rejected)
        )
        if deleted:
            self._counts_stale = True
            log.info("retention deleted settled taps count=%d", deleted)

    def _state(self, state: str, message: str) -> None:
        self._set_meta(
            uplink_state=state, uplink_message=message, uplink_state_since=iso(datetime.now(UTC))
        )

    def _publish_answered(self) -> None:
        if self._answered_at is not None and self._answered_at != self._answered_published:
            self._answered_published = self._answered_at
            self._set_meta(uplink_answered_at=self._answered_at)

    def _notify_status(self) -> None:
        connected = sum(running.connected for running in self._readers.values())
        readers = f"readers {connected}/{len(self._readers)} connected"
        down = self._supervisor.down()
        extra = f", down: {', '.join(sorted(down))}" if down else ""
        if self._counts is None:
            self._notifier.status(
                f"database not open, {self._recorder.unsaved} taps in memory, {readers}{extra}"
            )
            return
        pending = self._counts["pending"] + self._recorder.unsaved
        # "starting": the uploader is made after READY=1 (the module's docstring).
        state = self._uploader.state if self._uploader is not None else "starting"
        self._notifier.status(f"{pending} pending, uplink {state}, {readers}{extra}")


def _is_answer(outcome: Outcome) -> bool:
    """An HTTP answer, whatever its status (a 503 too); a timeout, a refused or lost
    connection or an internal error is none (their Retry has no status)."""
    return not isinstance(outcome, Retry) or outcome.status is not None


async def _import_aside(name: str) -> None:
    """Import `name` (the uploader with httpx, the metrics) in a thread: the loop goes on
    logging and handing out the taps recorded meanwhile, which the import held up 50 ms
    here (benchmarks/latency.py's first taps), longer on a Pi. Its modules live as long
    as the process: frozen as start-up's are (see `_main`)."""
    await asyncio.to_thread(importlib.import_module, name)
    gc.freeze()


def _wants_metrics(settings: Config) -> bool:
    return bool(settings.metrics.textfile or settings.metrics.listen)


def _warn_of_clear_text(settings: Config) -> None:
    if (warning := config.clear_text_token_warning(settings.uplink)) is not None:
        log.warning(warning)
