"""`gateagent run`: wiring the readers, the store and the uploader on one event loop.

    reader threads --emit--> Recorder (normalize, debounce, record) --wake--> Uploader
                                      \\-> Store (SQLite) <-- answers ---------/

Readers block in their own threads and hand reads to the recorder, whose writer thread
commits the taps on its own SQLite connection and tells the loop (`Handoff`);
everything else that touches SQLite runs on the loop, so the store needs no locks. Signals:
SIGTERM/SIGINT finish the requests in flight, commit and exit 0; SIGHUP re-reads the
configuration. systemd hears READY=1 once the database is open, a one-line STATUS=,
and WATCHDOG=1 only while the loops are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from gateagent import config, metrics
from gateagent.clock import Clock
from gateagent.config import Config, Reader
from gateagent.errors import ConfigError, GateagentError
from gateagent.logs import Repeats
from gateagent.notify import Notifier
from gateagent.readers import source_for
from gateagent.readers.base import Source, start
from gateagent.recorder import Recorder
from gateagent.store import Store, Tap, iso
from gateagent.uplink.client import Uploader

log = logging.getLogger(__name__)

# STATUS=, the clock check and the readers' last taps are at most this late; an idle
# gate wakes this seldom (benchmarks/idle.py: a 1 s tick cost 0.13 % CPU, this 0.05 %).
HOUSEKEEPING_S = 5.0
PURGE_EVERY_S = 3600.0


@dataclass
class _Running:
    """One configured reader and its thread."""

    config: Reader
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    connected: bool = False
    last_tap_at: datetime | None = None
    last_error: str | None = None
    # last_tap_at changed since it was last written: published by housekeeping, because
    # a write per tap would double the commits (and fsyncs) of the tap path.
    dirty: bool = False


class Daemon:
    def __init__(
        self,
        config_path: str,
        settings: Config,
        clock: Clock,
        *,
        notifier: Notifier | None = None,
        sources: Callable[[Reader], Source] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._path = config_path
        self.settings = settings
        self._clock = clock
        self._notifier = notifier or Notifier(None)
        self._sources = sources or source_for
        self._transport = transport
        self._readers: dict[str, _Running] = {}
        self._repeats = Repeats(log)
        self._synced: bool | None = None

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        settings = self.settings
        loop = asyncio.get_running_loop()
        store = Store.open(settings.storage.path)
        self._store = store
        try:
            boot = self._clock.boot_id()
            if unknown := store.mark_clock_unknown(boot):
                log.warning(
                    "held taps of an earlier boot cannot be corrected reason=clock-unknown count=%d"
                    " (gateagent requeue --held, or --drop)",
                    unknown,
                )
            store.set_meta("device", settings.device.name)
            store.set_meta("pid", str(os.getpid()))
            self._uploader = Uploader(
                settings.storage.path,
                settings,
                transport=self._transport,
                on_state=self._uplink_state,
            )
            self._recorder = Recorder(
                settings.storage.path,
                settings,
                self._clock,
                on_recorded=self._recorded,
                on_released=self._released,
            )
            self._recorder.start()
            self._uplink_state("ok", "")  # not the last run's state or message
            self._check_clock()
            # metrics: the textfile and /metrics (README "Monitoring many gates")
            self._metrics = metrics.Exporter(settings, unsaved=lambda: self._recorder.unsaved)
            self._metrics.start()
            counts = store.counts()
            stopping = asyncio.Event()
            loop.add_signal_handler(signal.SIGTERM, stopping.set)
            loop.add_signal_handler(signal.SIGINT, stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self._reload)
            # Reader threads start at once and never hold up READY=1 (SPEC: ready once
            # the database is open); the first STATUS= goes before it, so a
            # `systemctl status` right after `start` shows it.
            store.forget_readers([reader.name for reader in settings.readers])
            self._start_readers(settings.readers)
            self._notify_status()
            self._notifier.ready()
            log.info(
                "gateagent started device=%s readers=%d pending=%d held=%d profile=%s",
                settings.device.name,
                len(settings.readers),
                counts["pending"],
                counts["held"],
                settings.uplink.profile,
            )
            uploading = asyncio.ensure_future(self._uploader.run(stopping))
            housekeeping = asyncio.ensure_future(self._housekeeping(stopping, uploading))
            await stopping.wait()
            self._notifier.stopping()
            log.info("gateagent stopping: finishing requests in flight")
            for running in self._readers.values():
                running.stop.set()
            await uploading
            await housekeeping
            await self._recorder.close()
            for running in self._readers.values():
                if running.dirty:
                    self._publish_reader(running)
            self._metrics.stop()  # metrics: the last state, after the readers' last taps
            log.info("gateagent stopped pending=%d", store.counts()["pending"])
            return 0
        finally:
            store.close()

    # -- readers ---------------------------------------------------------------------

    def _start_readers(self, readers: list[Reader]) -> None:
        loop = asyncio.get_running_loop()
        for reader in readers:
            running = _Running(reader)
            self._readers[reader.name] = running
            self._store.set_reader(reader.name, False, None, "starting")
            source = self._sources(reader)

            def emit(raw: str, running: _Running = running) -> None:
                if not running.stop.is_set():
                    self._recorder.read(running.config, raw)

            def health(ok: bool, error: str | None, running: _Running = running) -> None:
                loop.call_soon_threadsafe(self._health, running, ok, error)

            running.thread = start(source, emit, health, running.stop)

    def _recorded(self, tap: Tap) -> None:
        running = self._readers.get(tap.reader)
        if running is not None:
            running.last_tap_at = self._clock.now_utc()
            running.dirty = True
        if tap.state == "held" and self._synced:
            # Read before the clock synchronized, committed after its held taps were
            # released: release it too, rather than leave it held until a restart.
            self._release_held()
        self._uploader.wake(tap.seq)

    def _health(self, running: _Running, ok: bool, error: str | None) -> None:
        if running.stop.is_set() or (ok, error) == (running.connected, running.last_error):
            return
        running.connected, running.last_error = ok, error
        name = running.config.name
        if ok:
            log.info("reader connected reader=%s", name)
        else:
            log.warning("reader disconnected reader=%s error=%s", name, error)
        self._publish_reader(running)

    def _publish_reader(self, running: _Running) -> None:
        running.dirty = False
        self._store.set_reader(
            running.config.name, running.connected, running.last_tap_at, running.last_error
        )

    # -- configuration ----------------------------------------------------------------

    def _reload(self) -> None:
        try:
            new = config.load(self._path)
        except ConfigError as exc:
            log.error("new configuration refused, the running one is kept: %s", exc)
            return
        old = self.settings
        if new.storage.path != old.storage.path:
            log.warning(
                "storage path changed: it takes effect after a restart path=%s", new.storage.path
            )
        self.settings = new
        self._recorder.reconfigure(new)
        self._uploader.reconfigure(new)
        self._metrics.reconfigure(new)  # metrics
        old_readers = {reader.name: reader for reader in old.readers}
        new_readers = {reader.name: reader for reader in new.readers}
        changed = [r for name, r in new_readers.items() if old_readers.get(name) != r]
        for name, running in list(self._readers.items()):
            if new_readers.get(name) != running.config:
                running.stop.set()
                del self._readers[name]
        self._store.forget_readers(list(new_readers))
        self._start_readers(changed)
        log.info("configuration reloaded path=%s readers_restarted=%d", self._path, len(changed))

    # -- housekeeping -----------------------------------------------------------------

    async def _housekeeping(self, stopping: asyncio.Event, uploading: asyncio.Future[None]) -> None:
        interval = self._notifier.watchdog_interval_s()
        tick = min(HOUSEKEEPING_S, interval) if interval else HOUSEKEEPING_S
        next_purge = 0.0
        while not stopping.is_set():
            now = time.monotonic()
            self._check_clock()
            if now >= next_purge:
                self._purge()
                next_purge = now + PURGE_EVERY_S
            for running in self._readers.values():
                if running.dirty:
                    self._publish_reader(running)
            self._uploader.tick()
            self._metrics.tick(now)  # metrics: the textfile, at its own interval
            self._repeats.tick(now)
            self._notify_status()
            if self._alive(uploading):
                self._notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=tick)

    def _alive(self, uploading: asyncio.Future[None]) -> bool:
        """WATCHDOG=1 only while every loop is alive: this event loop (it runs this), the
        uploader, the recorder's writer thread, and the threads of hid and serial readers
        (they never end on their own; a stdin reader ends with its input). Otherwise
        systemd restarts us."""
        stuck = []
        if uploading.done() or not self._uploader.alive():
            stuck.append("uploader")
        if not self._recorder.alive():
            stuck.append("recorder")
        for name, running in self._readers.items():
            thread = running.thread
            if running.config.kind != "stdin" and (thread is None or not thread.is_alive()):
                stuck.append(f"reader {name}")
        if stuck:
            self._repeats.report(
                "watchdog",
                logging.CRITICAL,
                f"not alive: {', '.join(stuck)}; systemd's watchdog will restart gateagent",
                time.monotonic(),
            )
        return not stuck

    def _check_clock(self) -> None:
        settings = self.settings
        synced = self._clock.synchronized()
        if synced == self._synced:
            return
        self._synced = synced
        self._store.set_meta("clock_synchronized", "1" if synced else "0")
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
        self._release_held()

    def _release_held(self) -> None:
        settings = self.settings
        try:
            released = self._store.release_held(
                self._clock.boot_id(),
                self._clock.now_utc(),
                self._clock.now_mono(),
                settings.device.tz,
                settings.taps.min_checkout_after,
            )
        except GateagentError as exc:
            # The recorder releases them before the next tap it records, or this
            # runs again when the next held tap is recorded.
            log.error("held taps not released: %s", exc)
            return
        self._released(released)

    def _released(self, count: int) -> None:
        if count:
            log.info("held taps corrected and released count=%d", count)
            self._uploader.rescan()

    def _purge(self) -> None:
        storage = self.settings.storage
        try:
            deleted = self._store.purge(datetime.now(UTC), storage.keep_sent, storage.keep_rejected)
        except GateagentError as exc:
            log.error("retention failed: %s", exc)
            return
        if deleted:
            log.info("retention deleted settled taps count=%d", deleted)

    def _uplink_state(self, state: str, message: str) -> None:
        self._store.set_meta("uplink_state", state)
        self._store.set_meta("uplink_message", message)
        self._store.set_meta("uplink_state_since", iso(datetime.now(UTC)))

    def _notify_status(self) -> None:
        pending = self._store.counts()["pending"] + self._recorder.unsaved
        connected = sum(running.connected for running in self._readers.values())
        self._notifier.status(
            f"{pending} pending, uplink {self._uploader.state}, "
            f"readers {connected}/{len(self._readers)} connected"
        )
