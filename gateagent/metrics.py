"""Prometheus metrics of one gate (SPEC "Feedback and monitoring", README "Monitoring many
gates").

Two ways out, the two that fleets use: a file for node_exporter's textfile collector,
rewritten atomically every `[metrics] textfile_interval` from the daemon's housekeeping
(no wake-up of its own), and, when `[metrics] listen` is set, prometheus_client's HTTP
server answering `/metrics`. Both show the same collector.

The collector reads at write or scrape time, on a read-only connection of its own, what
`gateagent status` reads: the queue, the oldest pending tap, the last delivery, the
uplink state, the readers and the clock, which the daemon publishes in the database; and
disk space beside the database with statvfs(2). So the gauges are right after a restart,
and a scrape costs a few indexed reads, nothing while nobody asks.

The counters (taps recorded, uploads settled) count what appeared in the database since
this process started: a seq watermark for new taps, a `settled_at` watermark (the partial
index `taps_settled`) for answers. Prometheus' `rate()` and `increase()` take a restart's
reset in their stride; counting from the table itself would go down when retention
deletes settled taps, which a counter must never do.

No card number is ever a label (SPEC): labels are reader names from the configuration,
tap states, upload outcomes and uplink states, all small closed sets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateagent import __version__
from gateagent.config import Config, listen_address
from gateagent.core.schedule import UplinkState
from gateagent.errors import StoreError
from gateagent.logs import Repeats
from gateagent.store import CACHE_KIB, Store, parse_iso

log = logging.getLogger(__name__)

PREFIX = "gateagent"
UPLINK_STATES: tuple[str, ...] = get_args(UplinkState)
# A tap's state when the collector first sees it; delivered or rejected by then means it
# was recorded to be sent (pending).
RECORDED_STATES = ("pending", "held", "ignored")
UPLOAD_OUTCOMES = ("delivered", "duplicate", "rejected")
QUEUE_STATES = ("pending", "held", "rejected")
# A scrape must not wait long behind a writer: WAL readers never do, except while a
# checkpoint resets the WAL.
READ_TIMEOUT_S = 1.0
# Recorded taps counted per query at most (see GateCollector._count).
COUNT_STEP = 1000


def _now_utc() -> datetime:
    return datetime.now(UTC)


class GateCollector(Collector):
    """The gate's metrics, read when collected. Safe to collect from several threads."""

    def __init__(
        self,
        settings: Config,
        *,
        unsaved: Callable[[], int] | None = None,
        wall: Callable[[], datetime] = _now_utc,
        repeats: Repeats | None = None,
        since: tuple[int, str] | None = None,
    ) -> None:
        """`since`: `Store.watermarks()` when the daemon started, so what it recorded and
        delivered before this was made counts; without it, counting starts at the first
        collect."""
        self.settings = settings
        self._unsaved = unsaved
        self._wall = wall
        self._repeats = repeats or Repeats(log)
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._conn: sqlite3.Connection | None = None
        # Taps up to this seq, and answers settled up to this time, are counted.
        self._seq: int | None = None if since is None else since[0]
        self._settled: str | None = None if since is None else since[1]
        self._recorded: dict[tuple[str, str], float] = {}
        self._uploads = dict.fromkeys(UPLOAD_OUTCOMES, 0.0)

    def close(self) -> None:
        with self._lock:
            self._drop_store()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            return iter(self._metrics())

    def _metrics(self) -> list[Metric]:
        settings = self.settings
        info = InfoMetricFamily(f"{PREFIX}_build", "gateagent's version, profile and device")
        info.add_metric(
            [],
            {
                "version": __version__,
                "profile": settings.uplink.profile,
                "device": settings.device.name,
            },
        )
        found: list[Metric] = [info, *self._disk()]
        if self._unsaved is not None:
            found.append(
                GaugeMetricFamily(
                    f"{PREFIX}_unsaved_taps",
                    "Taps read but not yet committed (the disk was full)",
                    value=self._unsaved(),
                )
            )
        try:
            found += self._database()
        except (StoreError, sqlite3.Error) as exc:
            # Only the database's metrics are missing; the disk's may say why.
            self._drop_store()
            self._repeats.report(
                "metrics-database",
                logging.WARNING,
                f"metrics: the tap database cannot be read: {exc}",
                time.monotonic(),
            )
        else:
            self._repeats.resolve(
                "metrics-database", "metrics: the tap database is readable again", time.monotonic()
            )
        return found

    def _disk(self) -> list[Metric]:
        path = self.settings.storage.path
        found: list[Metric] = []
        try:
            fs = os.statvfs(path.parent)
        except OSError:
            pass  # no folder yet: nothing to say of its disk
        else:
            found.append(
                GaugeMetricFamily(
                    f"{PREFIX}_disk_free_bytes",
                    "Space left for gateagent on the file system of the tap database",
                    value=fs.f_bavail * fs.f_frsize,
                )
            )
            found.append(
                GaugeMetricFamily(
                    f"{PREFIX}_disk_size_bytes",
                    "Size of the file system of the tap database",
                    value=fs.f_blocks * fs.f_frsize,
                )
            )
        size = 0
        for suffix in ("", "-wal"):
            # No -wal after a clean close.
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(f"{path}{suffix}").st_size
        found.append(
            GaugeMetricFamily(
                f"{PREFIX}_database_size_bytes",
                "Size of the tap database with its write-ahead log",
                value=size,
            )
        )
        return found

    def _database(self) -> list[Metric]:
        store = self._open()
        counts = store.counts()
        meta = store.meta()
        oldest = store.oldest_pending()
        last = store.last_delivery()
        readers = store.readers()
        assert self._conn is not None
        self._count(self._conn)
        now = self._wall()
        found: list[Metric] = []

        recorded = CounterMetricFamily(
            f"{PREFIX}_taps_recorded",
            "Taps recorded since gateagent started, by reader and the state they were"
            " recorded in (pending: to be sent; held: clock not synchronized; ignored)",
            labels=["reader", "state"],
        )
        for (name, state), value in sorted(self._recorded.items()):
            recorded.add_metric([name, state], value)
        found.append(recorded)

        uploads = CounterMetricFamily(
            f"{PREFIX}_uploads",
            "Taps the server answered for good since gateagent started, by outcome",
            labels=["outcome"],
        )
        for outcome, value in self._uploads.items():
            uploads.add_metric([outcome], value)
        found.append(uploads)

        queue = GaugeMetricFamily(
            f"{PREFIX}_queue_taps",
            "Taps in the database not delivered: pending (to send), held (clock), rejected",
            labels=["state"],
        )
        for state in QUEUE_STATES:
            queue.add_metric([state], counts.get(state, 0))
        found.append(queue)

        found.append(
            GaugeMetricFamily(
                f"{PREFIX}_oldest_pending_age_seconds",
                "Age of the oldest pending tap (0: none pending)",
                value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
            )
        )
        found.append(
            GaugeMetricFamily(
                f"{PREFIX}_last_delivery_timestamp_seconds",
                "When the server last accepted a tap, Unix time (0: none in the database)",
                value=last.timestamp() if last else 0.0,
            )
        )

        uplink = GaugeMetricFamily(
            f"{PREFIX}_uplink_state",
            "The uplink's state: 1 for the current one (ok, retrying, paused-auth, paused-config)",
            labels=["state"],
        )
        current = meta.get("uplink_state", "ok")
        for state in UPLINK_STATES:
            uplink.add_metric([state], float(state == current))
        found.append(uplink)

        synced = meta.get("clock_synchronized")
        if synced is not None:
            found.append(
                GaugeMetricFamily(
                    f"{PREFIX}_clock_synchronized",
                    '1 when the system clock is synchronized (SPEC "Time")',
                    value=float(synced == "1"),
                )
            )

        connected = GaugeMetricFamily(
            f"{PREFIX}_reader_connected",
            "1 while the reader is connected",
            labels=["reader"],
        )
        last_tap = GaugeMetricFamily(
            f"{PREFIX}_reader_last_tap_timestamp_seconds",
            "When the reader last read a card, Unix time (absent: none since it was configured)",
            labels=["reader"],
        )
        for reader in readers:
            connected.add_metric([reader["name"]], float(reader["connected"]))
            # From the taps, as `status` reads it: the daemon no longer writes the
            # readers table's column.
            if at := store.last_tap_at(reader["name"]):
                last_tap.add_metric([reader["name"]], parse_iso(at).timestamp())
        found += [connected, last_tap]
        return found

    def _count(self, conn: sqlite3.Connection) -> None:
        """Move the watermarks over what the database gained since the last collect."""
        for reader in self.settings.readers:
            for state in RECORDED_STATES:
                self._recorded.setdefault((reader.name, state), 0.0)
        if self._seq is None:
            # Count from now: what was there before this process is not its doing.
            assert self._store is not None
            self._seq, self._settled = self._store.watermarks()
            return
        # A GROUP BY that is not in an index's order sorts its rows in memory, in a
        # buffer as large as the cache (2 MB): a busy minute's taps sorted at once left
        # glibc's heap that much larger for good (benchmarks/longrun.py, issue 14). So the
        # recorded taps are counted COUNT_STEP seqs at a time; every seq up to `top` is
        # committed (one writer: seqs are handed out in commit order).
        top = int(conn.execute("SELECT coalesce(max(seq), 0) FROM taps").fetchone()[0])
        while self._seq < top:
            upto = min(self._seq + COUNT_STEP, top)
            for reader, state, count in conn.execute(
                "SELECT reader, CASE WHEN state IN ('held', 'ignored') THEN state"
                " ELSE 'pending' END, count(*) FROM taps WHERE seq > ? AND seq <= ? GROUP BY 1, 2",
                (self._seq, upto),
            ):
                key = (reader, state)
                self._recorded[key] = self._recorded.get(key, 0.0) + count
            self._seq = upto
        # One batch of answers shares one settled_at and one commit (Store.settle), so a
        # batch is seen whole or not at all. A dropped tap (`requeue --drop`) was never
        # answered by the server. Grouped by state in the order of the index taps_settled:
        # no sort.
        rows = conn.execute(
            "SELECT state, count(*), sum(reason IS 'duplicate'), max(settled_at) FROM taps"
            " WHERE state IN ('delivered', 'rejected') AND settled_at IS NOT NULL"
            " AND settled_at > ? AND reason IS NOT 'dropped' GROUP BY state",
            (self._settled,),
        ).fetchall()
        for state, count, duplicates, latest in rows:
            duplicate = duplicates if state == "delivered" else 0
            self._uploads["duplicate"] += duplicate
            self._uploads[state] += count - duplicate
            self._settled = max(self._settled or "", latest)

    def _open(self) -> Store:
        if self._store is None:
            path = self.settings.storage.path
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=READ_TIMEOUT_S,
                # The textfile is written on the event loop, a scrape runs in the HTTP
                # server's thread; self._lock keeps them apart.
                check_same_thread=False,
                isolation_level=None,
            )
            # A collect streams a minute's new taps through it (GateCollector._count).
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._store, self._conn = Store(path, conn), conn
        return self._store

    def _drop_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = self._conn = None


class Exporter:
    """The daemon's metrics: `start()` once, `tick(now)` from housekeeping, `stop()` last.

    Nothing here ever stops the daemon: a textfile that cannot be written is a warning
    (summarised while it repeats), an address that cannot be bound an error line.
    """

    def __init__(
        self,
        settings: Config,
        *,
        unsaved: Callable[[], int] | None = None,
        wall: Callable[[], datetime] = _now_utc,
        since: tuple[int, str] | None = None,
    ) -> None:
        self._settings = settings
        self._repeats = Repeats(log)
        self.collector = GateCollector(
            settings, unsaved=unsaved, wall=wall, repeats=self._repeats, since=since
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._next_write = 0.0
        self._missing: Path | None = None  # the textfile's folder, while it is missing

    def start(self) -> None:
        self._listen(self._settings.metrics.listen)
        self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Write the textfile when its interval has passed; summarise repeated problems."""
        self._repeats.tick(now)
        metrics = self._settings.metrics
        if metrics.textfile and now >= self._next_write:
            self._next_write = now + metrics.textfile_interval
            self._write(Path(metrics.textfile), now)

    def reconfigure(self, settings: Config) -> None:
        old = self._settings.metrics
        self._settings = self.collector.settings = settings
        if settings.metrics.listen != old.listen:
            self._shutdown()
            self._listen(settings.metrics.listen)
        if settings.metrics != old:
            self._next_write = 0.0  # at the next tick

    def stop(self) -> None:
        """The last state (a stale file then says the daemon is gone), then close."""
        if self._settings.metrics.textfile:
            self._write(Path(self._settings.metrics.textfile), time.monotonic())
        self._shutdown()
        self.collector.close()

    def text(self) -> bytes:
        """The exposition text, as /metrics and the textfile show it."""
        return generate_latest(self.registry)

    @property
    def address(self) -> tuple[str, int] | None:
        """Where /metrics is served (the port is the kernel's pick for port 0), or None."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _listen(self, listen: str) -> None:
        if not listen:
            return
        host, port = listen_address(listen)
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            log.error(
                "metrics endpoint not started listen=%s error=%s", listen, exc.strerror or exc
            )
            return
        log.info("metrics endpoint listening listen=%s", listen)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _write(self, path: Path, now: float) -> None:
        if not path.parent.is_dir():
            # Once, not a warning per interval on a gate without node_exporter.
            if self._missing != path.parent:
                self._missing = path.parent
                log.warning(
                    "metrics textfile not written: no folder %s (install"
                    ' prometheus-node-exporter, or set [metrics] textfile = "")',
                    path.parent,
                )
            return
        if self._missing is not None:
            self._missing = None
            log.info("metrics textfile folder found path=%s", path)
        try:
            write_atomically(path, self.text())
        except OSError as exc:
            self._repeats.report(
                "metrics-textfile",
                logging.WARNING,
                f"metrics textfile not written path={path} error={exc.strerror or exc}",
                now,
            )
            return
        self._repeats.resolve("metrics-textfile", f"metrics textfile written path={path}", now)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, so a reader sees the old file or the new one, whole.

    The temporary file is in the same folder (rename(2) is atomic only within one file
    system) and does not end in .prom, which node_exporter's collector would read.
    No fsync: after a crash a stale or missing file is as good as any, the next interval
    writes it again.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        # The unit's UMask=0077 would make it 0600, and node_exporter runs as `prometheus`.
        os.fchmod(fd, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink(temporary)
        raise
    os.close(fd)
    try:
        os.replace(temporary, path)
    except BaseException:
        _unlink(temporary)
        raise


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):  # already gone: nothing to tidy
        os.unlink(path)
