"""The uploader: claims pending taps, POSTs each, and writes what the server answered.

One keep-alive `httpx.AsyncClient`, at most `concurrency` requests in flight. A pass
walks the pending taps in the order they were recorded; a card whose earlier tap is in
flight, waiting for a retry, or not yet written back is skipped for the rest of the pass,
so taps of one card reach the server in order, and other cards are not held up by it.

The uplink as a whole has a state (SPEC `uplink_state`):
- `ok`: up to `concurrency` requests in flight;
- `retrying`: the server failed transiently (408, 429, 5xx, timeout, connection): one
  request at a time, after a backoff with full jitter that honours `Retry-After`;
- `paused-auth` / `paused-config`: the server says our token or gate is wrong; one probe
  every few minutes until it accepts again. Nothing is dropped meanwhile.

Answers are written in batches (`Store.settle`) a few milliseconds apart: SQLite commits
cost an fsync each, and an answer lost in a crash only means that tap is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from gateagent import logs
from gateagent.config import Config
from gateagent.core.answers import Delivered, Outcome, Paused, Rejected, Retry
from gateagent.core.backoff import Backoff
from gateagent.errors import StoreError
from gateagent.logs import Repeats
from gateagent.store import Answer, Store, Tap
from gateagent.uplink import http
from gateagent.uplink.profiles import build

log = logging.getLogger(__name__)

PAGE = 500
ANSWER_BATCH_S = 0.02
ANSWER_RETRY_S = 1.0
HEARTBEAT_S = 5.0
# SPEC: on SIGTERM, finish the request in flight and exit "within a few seconds".
FINISH_S = 5.0
# Requeued taps (another process) are found by a sweep at least this often.
SWEEP_S = 60.0
# "try again slowly" (SPEC) while the server refuses our token or gate: a probe within
# a minute, so a fix on the server shows at the gate soon after.
PAUSE_BACKOFF = Backoff(base_s=15.0, cap_s=60.0)
# absensi timestamps a tap on receipt: a late delivery is a wrong attendance time.
ABSENSI_LATE_S = 60.0


@dataclass(frozen=True)
class Sent:
    """What one request came to, for the state machine."""

    tap: Tap
    outcome: Outcome
    retry_after_s: float | None


class Uploader:
    def __init__(
        self,
        store: Store,
        settings: Config,
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        on_state: Callable[[str, str], None] | None = None,
        backoff: Backoff | None = None,
        pause_backoff: Backoff = PAUSE_BACKOFF,
    ) -> None:
        self._store = store
        self._settings = settings
        _guard(settings)
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._monotonic = monotonic
        self._transport = transport
        self._on_state = on_state
        self._backoff = backoff or Backoff()
        self._pause_backoff = pause_backoff
        self._repeats = Repeats(log, window_s=600.0)
        self.state = "ok"
        self.message = ""
        self._failures = 0
        self._hold_until = 0.0
        self._retry_at: dict[int, float] = {}
        self._in_flight: dict[int, str] = {}
        self._unwritten: dict[int, str] = {}
        self._answers: list[Sent] = []
        self._answer_flush: asyncio.TimerHandle | None = None
        self._cursor = 0
        self._seen: set[str] = set()
        self._beat_at = monotonic()
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    # -- wiring --------------------------------------------------------------------

    def wake(self) -> None:
        """A tap was recorded: with flush_interval 0s (or absensi) send it now."""
        if self._sends_at_once():
            self._wake.set()

    def alive(self) -> bool:
        """The sending loop went round recently (for systemd's watchdog). A request holds
        it up for at most `timeout`, so a longer silence means it is stuck."""
        limit = self._settings.uplink.timeout + HEARTBEAT_S * 2
        return self._monotonic() - self._beat_at < limit

    def tick(self) -> None:
        """Housekeeping: summarise repeated problems whose window has passed."""
        self._repeats.tick(self._monotonic())

    def reconfigure(self, settings: Config) -> None:
        self._settings = settings
        _guard(settings)
        self.rescan()

    async def run(self, stopping: asyncio.Event) -> None:
        """Send until `stopping` is set, then finish the requests in flight."""
        async with http.client(self._settings.uplink, self._transport) as client:
            self._client = client
            while not stopping.is_set():
                try:
                    await self._pass(stopping)
                except StoreError as exc:
                    self._repeats.report("store", logging.ERROR, str(exc), self._monotonic())
                await self._sleep(stopping)
            if self._tasks:
                # A request still unanswered after this is abandoned: its tap stays
                # pending and is sent again next time (at least once).
                _, unfinished = await asyncio.wait(self._tasks, timeout=FINISH_S)
                for task in unfinished:
                    task.cancel()
            self._write_answers()

    # -- scheduling ----------------------------------------------------------------

    def _sends_at_once(self) -> bool:
        return (
            self._settings.uplink.flush_interval == 0 or self._settings.uplink.profile == "absensi"
        )

    def _capacity(self, now: float) -> int:
        if self.state == "ok":
            return self._settings.uplink.concurrency
        if now < self._hold_until:
            return 0
        return 1  # one probe at a time while the server is failing or refusing

    async def _pass(self, stopping: asyncio.Event) -> None:
        """Go on with the sweep: one walk over the pending taps, resumed where it stopped.

        Within a sweep a card is sent at most once, and a card seen once blocks its later
        taps until the next sweep: so a tap never overtakes an earlier one of its card,
        and each wake-up costs the taps it reads, not a scan of the whole backlog.
        """
        self._wake.clear()
        while not stopping.is_set():
            self._beat_at = self._monotonic()
            if self._cursor == 0:
                self._seen = set(self._in_flight.values()) | set(self._unwritten.values())
            batch = self._store.pending(self._cursor, PAGE)
            if not batch:
                self._cursor = 0  # the sweep is over; the next one starts from the oldest
                return
            for tap in batch:
                busy = tap.seq in self._in_flight or tap.seq in self._unwritten
                if not busy and tap.card_no not in self._seen:
                    due = self._retry_at.get(tap.seq, 0.0) <= self._monotonic()
                    if due and not await self._slot(stopping):
                        return  # this tap is looked at again when the pass resumes
                    self._seen.add(tap.card_no)
                    if due:
                        self._start(tap)
                self._cursor = tap.seq

    def rescan(self) -> None:
        """Taps older than the sweep's position became pending (clock released held
        taps, a requeue): start a new sweep so they keep their place in card order."""
        self._cursor = 0
        self._wake.set()

    async def _slot(self, stopping: asyncio.Event) -> bool:
        """Wait for room for one more request; False if there will be none this pass."""
        while len(self._in_flight) >= self._capacity(self._monotonic()):
            self._beat_at = self._monotonic()
            if self._capacity(self._monotonic()) == 0 or stopping.is_set():
                return False
            self._slot_free.clear()
            await self._slot_free.wait()
        return not stopping.is_set()

    async def _sleep(self, stopping: asyncio.Event) -> None:
        now = self._monotonic()
        interval = self._settings.uplink.flush_interval
        deadlines = [now + (interval if interval > 0 and not self._sends_at_once() else SWEEP_S)]
        deadlines += [at for at in self._retry_at.values() if at > now]
        if self._hold_until > now:
            deadlines.append(self._hold_until)
        # Wake at least every HEARTBEAT_S, so alive() can tell idle from stuck.
        timeout = max(0.0, min(*deadlines, now + HEARTBEAT_S) - now)
        self._beat_at = now
        wake = asyncio.ensure_future(self._wake.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({wake, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            stop.cancel()

    # -- one request ---------------------------------------------------------------

    def _start(self, tap: Tap) -> None:
        self._in_flight[tap.seq] = tap.card_no
        task = asyncio.ensure_future(self._send(tap))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, tap: Tap) -> None:
        try:
            sent = await self._post(tap)
        finally:
            del self._in_flight[tap.seq]
            self._slot_free.set()
        self._account(sent)
        self._answers.append(sent)
        self._unwritten[tap.seq] = tap.card_no
        if self._answer_flush is None:
            loop = asyncio.get_running_loop()
            self._answer_flush = loop.call_later(ANSWER_BATCH_S, self._write_answers)

    async def _post(self, tap: Tap) -> Sent:
        settings = self._settings
        request = build(tap, settings.uplink, settings.device.name)
        assert self._client is not None
        reply = await http.post(self._client, request, settings.uplink)
        return Sent(tap, reply.outcome, reply.retry_after_s)

    def _write_answers(self) -> None:
        self._answer_flush = None
        if not self._answers:
            return
        answers = self._answers
        try:
            self._store.settle(
                [Answer(sent.tap.seq, sent.outcome) for sent in answers], datetime.now(UTC)
            )
        except StoreError as exc:
            # Kept, with their cards still blocked, and written again: a card is free for
            # its next tap only once its answer is in the database.
            self._repeats.report(
                "store", logging.ERROR, f"{exc}: answers kept and written again", self._monotonic()
            )
            loop = asyncio.get_running_loop()
            self._answer_flush = loop.call_later(ANSWER_RETRY_S, self._write_answers)
            return
        self._answers = []
        self._repeats.resolve("store", "answers written again", self._monotonic())
        for sent in answers:
            del self._unwritten[sent.tap.seq]
            # Logged once written: "tap delivered" in the journal means it is in the database.
            if isinstance(sent.outcome, Delivered):
                self._delivered(sent.tap, sent.outcome)
            elif isinstance(sent.outcome, Rejected):
                self._rejected(sent.tap, sent.outcome)
        # A card whose tap was just written may have a next tap waiting.
        self._wake.set()

    # -- the state machine ---------------------------------------------------------

    def _account(self, sent: Sent) -> None:
        now = self._monotonic()
        tap, outcome = sent.tap, sent.outcome
        if isinstance(outcome, Retry):
            self._retry_at[tap.seq] = now + self._backoff.delay(
                tap.attempts + 1, sent.retry_after_s, self._rng
            )
            self._failures += 1
            self._hold_until = now + self._backoff.delay(
                self._failures, sent.retry_after_s, self._rng
            )
            self._set_state("retrying", f"{outcome.reason} {outcome.message}".strip(), now)
            return
        if isinstance(outcome, Paused):
            self._failures += 1
            self._hold_until = now + self._pause_backoff.delay(
                self._failures, sent.retry_after_s, self._rng
            )
            self._set_state(outcome.state, outcome.message, now)
            return
        self._retry_at.pop(tap.seq, None)
        self._failures = 0
        self._set_state("ok", "", now)
        if isinstance(outcome, Rejected) and outcome.clock_ahead:
            self._repeats.report(
                "clock-ahead",
                logging.ERROR,
                "the server says taps lie in the future: this gate's clock is ahead",
                now,
            )

    def _set_state(self, state: str, message: str, now: float) -> None:
        # One problem key per state: a change of state (retrying -> paused-auth) is news
        # and logged; the same state again is only counted and summarised.
        previous = f"uplink {self.state}"
        if state == "ok":
            self._repeats.resolve(previous, "uplink ok again", now)
        else:
            if state != self.state:
                self._repeats.resolve(
                    previous, f"uplink no longer {self.state}", now, logging.DEBUG
                )
            level = logging.WARNING if state == "retrying" else logging.ERROR
            self._repeats.report(f"uplink {state}", level, f"uplink {state}: {message}", now)
        changed = state != self.state
        self.state, self.message = state, message
        if changed and self._on_state is not None:
            self._on_state(state, message)

    def _delivered(self, tap: Tap, outcome: Delivered) -> None:
        log.info(
            "tap delivered card_no=%s checktype=%s student=%s status=%s%s",
            tap.card_no,
            tap.checktype,
            outcome.student_name or "-",
            outcome.attendance_status or "-",
            " duplicate=yes" if outcome.duplicate else "",
        )
        if self._settings.uplink.profile == "absensi":
            late_s = (datetime.now(UTC) - tap.tapped_at).total_seconds()
            if late_s > ABSENSI_LATE_S:
                log.warning(
                    "tap delivered late: the server records the time it receives it"
                    " card_no=%s late_s=%.0f",
                    tap.card_no,
                    late_s,
                )

    def _rejected(self, tap: Tap, outcome: Rejected) -> None:
        log.warning(
            "tap rejected card_no=%s reason=%s status=%s message=%s",
            tap.card_no,
            outcome.reason,
            outcome.status,
            outcome.message,
        )


def _guard(settings: Config) -> None:
    """The token this uploader sends is never shown: registered with the log redactor,
    also when a reload (SIGHUP) brings a new one."""
    if settings.uplink.token is not None:
        logs.add_secret(settings.uplink.token.get_secret_value())
