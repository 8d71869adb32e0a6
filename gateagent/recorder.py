"""From a reader's raw read to a recorded tap (SPEC "Data flow").

    raw -> normalize (card_format) -> debounce (all readers) -> store.record (commit)

`Recorder.read()` is called on the daemon's event loop for every frame a reader
decoded. Garbage never becomes a tap and never raises. When the disk is full the tap is
kept in memory, in order, and recorded as soon as the disk takes it again.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable

from gateagent.clock import Clock
from gateagent.config import Config, Reader
from gateagent.core.cards import InvalidCard, normalize
from gateagent.core.debounce import Debouncer
from gateagent.errors import StoreError
from gateagent.logs import Repeats
from gateagent.store import NewTap, Store, Tap

log = logging.getLogger(__name__)

# Taps kept in memory while the disk is full: a day at a large school, ~100 bytes each.
UNSAVED_MAX = 50_000
SYNC_CHECK_S = 1.0


class Recorder:
    def __init__(
        self,
        store: Store,
        settings: Config,
        clock: Clock,
        on_recorded: Callable[[Tap], None] = lambda tap: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_recorded = on_recorded
        self._repeats = Repeats(log)
        self._unsaved: deque[NewTap] = deque()
        self.settings = settings
        self._debouncer = Debouncer(settings.taps.debounce)
        self._synced = False
        self._synced_at = float("-inf")

    def reconfigure(self, settings: Config) -> None:
        self.settings = settings
        self._debouncer.set_window(settings.taps.debounce)

    @property
    def unsaved(self) -> int:
        return len(self._unsaved)

    def read(self, reader: Reader, raw: str) -> Tap | None:
        """One card read by `reader`: record it unless it is garbage or a repeat."""
        taps = self.settings.taps
        card_no = normalize(raw, taps.card_format, taps.reverse_bytes)
        if isinstance(card_no, InvalidCard):
            log.warning(
                "read dropped: not a card number reader=%s reason=%s raw=%r",
                reader.name,
                card_no.reason,
                raw[:40],
            )
            return None
        at_mono = self._clock.now_mono()
        if self._debouncer.seen(card_no, at_mono):
            log.debug("read repeated card_no=%s reader=%s", card_no, reader.name)
            return None
        synced = self._synchronized(at_mono)
        tap = NewTap(
            tap_id=str(uuid.uuid4()),
            card_no=card_no,
            reader=reader.name,
            gate=reader.gate,
            direction=reader.direction,
            tapped_at=self._clock.now_utc(),
            at_mono=at_mono,
            boot_id=self._clock.boot_id(),
            clock_synced=synced,
        )
        if len(self._unsaved) >= UNSAVED_MAX:
            log.critical("tap lost: disk full and memory buffer full card_no=%s", card_no)
            return None
        self._unsaved.append(tap)
        return self.flush()

    def _synchronized(self, now_mono: float) -> bool:
        # Asked at most once a second: it costs a stat and a system call, and a tap
        # marked unsynchronized just after the sync is released (corrected) at once.
        if now_mono - self._synced_at >= SYNC_CHECK_S or now_mono < self._synced_at:
            self._synced = self._clock.synchronized()
            self._synced_at = now_mono
        return self._synced

    def flush(self) -> Tap | None:
        """Record what is kept in memory, oldest first; the last tap recorded, if any."""
        recorded = None
        settings = self.settings
        hold = settings.device.require_clock_sync
        while self._unsaved:
            tap = self._unsaved[0]
            try:
                recorded = self._store.record(
                    tap,
                    settings.device.tz,
                    settings.taps.min_checkout_after,
                    hold=hold and not tap.clock_synced,
                )
            except StoreError as exc:
                # A full disk (or a database locked past the busy timeout): the tap is
                # not recorded yet, so it stays in memory, in order, and is tried again.
                self._repeats.report(
                    "store",
                    logging.CRITICAL,
                    f"{exc}: taps kept in memory and retried unsaved={len(self._unsaved)}",
                    self._clock.now_mono(),
                )
                return recorded
            self._unsaved.popleft()
            self._log(recorded)
            self._on_recorded(recorded)
        if recorded is not None:
            self._repeats.resolve(
                "store", "the database takes taps again: kept taps recorded", self._clock.now_mono()
            )
        return recorded

    def _log(self, tap: Tap) -> None:
        log.info(
            "tap recorded card_no=%s reader=%s checktype=%s state=%s%s",
            tap.card_no,
            tap.reader,
            tap.checktype if tap.checktype is not None else "-",
            tap.state,
            f" reason={tap.reason}" if tap.reason else "",
        )
