"""The uploader: the I/O shell of the delivery scheduler (`core/schedule.py`).

The scheduler decides what to send, when, how many at once, and what each answer means
for the uplink; this module only carries out its actions (read a page of pending taps,
start a request, wait, cancel) and tells it what happened. Its rules are in the
scheduler's docstring and the README's "Delivery" section.

Each request runs on a worker thread (`_Workers`) through the blocking HTTP boundary
(`uplink/http.py`): a delivered tap costs 1.8M instructions this way, 3.0M over
httpcore's asyncio pool and 4.2M through httpx's AsyncClient (README "Performance").
The thread hands its `Reply` back to the loop; the loop alone talks to the scheduler. A
request's total deadline is kept in the thread (every socket wait is bounded by it) and,
should a thread hang where no socket wait can be bounded (a name lookup), on the loop:
at the deadline plus `BACKSTOP_S` the request is given up as timed out. A cancelled
request (a stop, the end of a run) has its socket shut down, which ends its thread at
once; its tap stays guarded like an ambiguous failure, for the scheduler of the
uploader's next run (`Scheduler(guards=...)`) and for the next process of this boot
(the meta table's `uplink_guards`).

All SQLite work runs in the uploader's own `DbThread`, so a locked or slow database
delays deliveries, never the event loop. Page reads and answer writes go through that
one thread in order, so a page never shows as pending a tap whose answer was written
after it was read, and the scheduler (which still counts that tap as unwritten) never
sends it twice.

Answers are written in batches (`Store.settle`) a few milliseconds apart: SQLite commits
cost an fsync each, and an answer lost in a crash only means that tap is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gateagent import logs
from gateagent.clock import BOOT_ID_PATH
from gateagent.config import Config, Uplink
from gateagent.core.answers import Delivered, Outcome, Rejected, Retry
from gateagent.core.backoff import Backoff
from gateagent.core.schedule import (
    PAUSE_BACKOFF,
    Cancel,
    Count,
    Fetch,
    Finished,
    Rules,
    Scheduler,
    Send,
    Wait,
)
from gateagent.dbthread import DbThread
from gateagent.errors import StoreError
from gateagent.logs import Repeats
from gateagent.store import Answer, Store, Tap
from gateagent.uplink import http
from gateagent.uplink.profiles import build

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE = 500
ANSWER_BATCH_S = 0.02
# Seconds between attempts while the database refuses a read or a write.
DB_RETRY_S = 1.0
# A database call this long unanswered is stuck (a hung disk): systemd's watchdog.
DB_STUCK_S = 30.0
# absensi timestamps a tap on receipt: a late delivery is a wrong attendance time.
ABSENSI_LATE_S = 60.0
# The keys that only say how to send, not where: a change of any other [uplink] key is a
# new endpoint, tried at once.
_TIMING_KEYS = {"flush_interval", "concurrency", "timeout", "ambiguous_margin"}
# The meta key of the guards a stop leaves to the next process of this boot.
GUARDS_KEY = "uplink_guards"
# A request whose thread has not answered this long after its deadline (a name lookup
# hangs: no socket wait to bound) is given up by the loop, so the watchdog never sees it.
BACKSTOP_S = 1.0


class _Failed:
    """A database call that failed (and was reported)."""


FAILED = _Failed()


@dataclass(eq=False)
class _Client:
    """One HTTP client and the requests its threads still run; closed once retired and
    unused."""

    http: http.Client
    running: int = 0
    retired: bool = False

    def release(self) -> None:
        self.running -= 1
        if self.retired and self.running == 0:
            self.http.close()

    def retire(self) -> None:
        self.retired = True
        if self.running == 0:
            self.http.close()


@dataclass(eq=False)
class _Request:
    tap: Tap
    call: http.Call
    client: _Client
    backstop: asyncio.TimerHandle | None = field(default=None, repr=False)


class _Workers:
    """The threads that run requests: daemon threads (a request that hangs never holds up
    the process's exit), one more started whenever none is idle."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._work, name="uplink-http", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Each thread ends after its current job (a cancelled request's ends at once)."""
        with self._lock:
            threads, self._threads, self._idle = self._threads, 0, 0
        for _ in range(threads):
            self._jobs.put(None)


class Uploader:
    def __init__(
        self,
        path: Path,
        settings: Config,
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_state: Callable[[str, str], None] | None = None,
        on_answer: Callable[[Tap, Outcome], None] | None = None,
        backoff: Backoff | None = None,
        pause_backoff: Backoff = PAUSE_BACKOFF,
    ) -> None:
        self._settings = settings
        _guard(settings)
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._monotonic = monotonic
        self._on_state = on_state
        # Each server answer, as it arrives (feedback at the gate: the verdict).
        self._on_answer = on_answer
        self._backoff = backoff or Backoff()
        self._pause_backoff = pause_backoff
        self._repeats = Repeats(log, window_s=600.0)
        self._path = path
        self._db: DbThread | None = None
        self._db_calls: dict[int, float] = {}
        self._call_ids = itertools.count()
        self._scheduler: Scheduler[Tap] | None = None
        self._latest = 0  # recorded before the scheduler exists
        self._early: list[Tap] = []
        self._rescan = False
        self._event = asyncio.Event()
        self._client: _Client | None = None
        self._clients: set[_Client] = set()
        self._workers: _Workers | None = None
        self._requests: dict[int, _Request] = {}
        # Taps not to be sent before a time (ambiguous or cancelled attempts), kept from
        # one run to the next: the server may still be working on them.
        self._guards: dict[int, float] = {}
        self._answers: list[tuple[Tap, Outcome]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._stop_told = False
        self._failed_once = False

    # -- wiring --------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._scheduler.state if self._scheduler is not None else "ok"

    @property
    def message(self) -> str:
        """What the server (or the network) last said of a failure; "" when ok."""
        return self._scheduler.message if self._scheduler is not None else ""

    def wake(self, tap: Tap) -> None:
        """`tap` was recorded."""
        if self._scheduler is None:
            self._latest = max(self._latest, tap.seq)
            if tap.state == "pending" and len(self._early) < PAGE:
                self._early.append(tap)  # for the scheduler to judge: fresh taps first
        elif not self._scheduler.recorded(tap.seq, tap if tap.state == "pending" else None):
            return  # it goes with the next flush: the wait carried out holds
        self._event.set()

    def rescan(self) -> None:
        """Taps older than the newest became pending (held taps released, a requeue)."""
        if self._scheduler is None:
            self._rescan = True
        else:
            self._scheduler.rescan()
        self._event.set()

    def alive(self) -> bool:
        """For systemd's watchdog: no request runs far past its total deadline and no
        database call hangs. (An idle uploader waits without waking: nothing to check.)"""
        now = self._monotonic()
        if any(now - since > DB_STUCK_S for since in self._db_calls.values()):
            return False
        return self._scheduler is None or not self._scheduler.overdue(now)

    def tick(self) -> None:
        """Housekeeping: summarise repeated problems whose window has passed."""
        self._repeats.tick(self._monotonic())

    def reconfigure(self, settings: Config) -> None:
        old, self._settings = self._settings.uplink, settings
        _guard(settings)
        new = settings.uplink
        if self._scheduler is not None:
            endpoint = old.model_dump(exclude=_TIMING_KEYS) != new.model_dump(exclude=_TIMING_KEYS)
            self._scheduler.reconfigure(self._rules(), self._monotonic(), endpoint)
        if self._client is not None and new != old:
            # A new timeout, concurrency, trust or proxy takes effect with the next
            # request; the old client closes once its requests have ended.
            self._client.retire()
            self._client = self._new_client()
        self._event.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Send until `stopping` is set, then finish (or abandon) the requests in flight.

        Runs again after an error (the supervisor restarts it): each run has its own
        database thread, worker threads, scheduler and client; answers not written by the
        end of a run are dropped (logged), and their taps sent again, but not before the
        guard of a request that may still be running on the server."""
        self._db = DbThread(self._path, "uplink-db")
        self._workers = _Workers()
        self._closing = False
        self._stop_told = False
        # `stopping` wakes the waits below as any other event does.
        relay = asyncio.ensure_future(_relay(stopping, self._event))
        try:
            read = await self._until_read(
                stopping, lambda store: (store.last_seq(), store.meta().get(GUARDS_KEY))
            )
            if read is None:
                return
            latest, kept = read
            now = self._monotonic()
            self._guards = {**_kept_guards(kept, now), **self._guards}
            scheduler = Scheduler[Tap](
                self._rules(),
                now,
                max(latest, self._latest),
                self._rng,
                PAGE,
                guards=self._guards,
            )
            for tap in self._early:
                scheduler.recorded(tap.seq, tap)
            self._early = []
            if self._rescan:
                scheduler.rescan()
            self._scheduler = scheduler
            self._client = self._new_client()
            await self._carry_out(scheduler, stopping)
        finally:
            relay.cancel()
            await self._close()

    # -- carrying out the scheduler's actions ----------------------------------------

    async def _carry_out(self, scheduler: Scheduler[Tap], stopping: asyncio.Event) -> None:
        while True:
            now = self._monotonic()
            if stopping.is_set():
                scheduler.stop(now)
                self._stop_told = True
            action = scheduler.next_action(now)
            if isinstance(action, Fetch):
                page = await self._call(_page(action.after_seq))
                if isinstance(page, _Failed):
                    await self._wait(stopping, now + DB_RETRY_S)
                else:
                    scheduler.fetched(page)
            elif isinstance(action, Count):
                oldest = await self._call(lambda store: store.oldest_pending_by_card())
                # Not read: the next sweep that walks the whole backlog counts them.
                scheduler.counted(None if isinstance(oldest, _Failed) else oldest)
            elif isinstance(action, Send):
                self._start(action.tap)
            elif isinstance(action, Wait):
                await self._wait(stopping, action.until)
            elif isinstance(action, Cancel):
                # Abandoned: their taps stay pending and are sent again next time.
                for seq in action.seqs:
                    self._cancel(self._requests.pop(seq))
            else:
                assert isinstance(action, Finished)
                return

    async def _wait(self, stopping: asyncio.Event, until: float) -> None:
        """Until `until`, or until an event may change the scheduler's mind (a stop is
        one: `_relay`). One awaited event and a timer, no task: this runs once or twice
        per request."""
        if stopping.is_set() and not self._stop_told:
            return  # the stop is news: the caller acts on it first
        self._event.clear()
        timeout = None if until == float("inf") else max(0.0, until - self._monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()

    async def _until_read(self, stopping: asyncio.Event, work: Callable[[Store], T]) -> T | None:
        while not stopping.is_set():
            result = await self._call(work)
            if not isinstance(result, _Failed):
                return result
            await self._wait(stopping, self._monotonic() + DB_RETRY_S)
        return None

    async def _call(self, work: Callable[[Store], T], kept: str = "") -> T | _Failed:
        """A database call in the uploader's thread; FAILED (and reported) if it failed."""
        call = next(self._call_ids)
        self._db_calls[call] = self._monotonic()
        assert self._db is not None
        try:
            result = await self._db.call(work)
        except StoreError as exc:
            message = f"{exc}: {kept} and written again" if kept else str(exc)
            self._repeats.report("store", logging.ERROR, message, self._monotonic())
            return FAILED
        finally:
            del self._db_calls[call]
        self._repeats.resolve("store", "the database answers again", self._monotonic())
        return result

    def _rules(self) -> Rules:
        uplink = self._settings.uplink
        # absensi timestamps a tap when it arrives: it is always sent at once.
        at_once = uplink.flush_interval == 0 or uplink.profile == "absensi"
        return Rules(
            concurrency=uplink.concurrency,
            flush_interval_s=0.0 if at_once else uplink.flush_interval,
            timeout_s=uplink.timeout,
            ambiguous_wait_s=uplink.timeout + uplink.ambiguous_margin,
            backoff=self._backoff,
            pause_backoff=self._pause_backoff,
        )

    # -- one request ---------------------------------------------------------------

    def _new_client(self) -> _Client:
        settings = self._settings
        made = _Client(http.client(settings.uplink, device=settings.device.name))
        self._clients.add(made)
        return made

    def _start(self, tap: Tap) -> None:
        assert self._client is not None and self._workers is not None
        uplink, device = self._settings.uplink, self._settings.device.name
        client = self._client
        client.running += 1
        call = http.Call(uplink.timeout)
        request = _Request(tap, call, client)
        self._requests[tap.seq] = request
        loop = asyncio.get_running_loop()
        request.backstop = loop.call_later(
            uplink.timeout + BACKSTOP_S, self._overdue, tap.seq, request
        )

        def send() -> None:  # on a worker thread
            reply = self._send(tap, client.http, uplink, device, call)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process ends
                loop.call_soon_threadsafe(self._sent, request, reply)

        self._workers.run(send)

    def _send(
        self, tap: Tap, client: http.Client, uplink: Uplink, device: str, call: http.Call
    ) -> http.Reply:
        try:
            return http.post(client, build(tap, uplink, device), uplink, call)
        except Exception as exc:
            # A bug below the boundary: accounted like any failure (issue 11 item 8:
            # unaccounted, the tap was sent again at once, over and over). It may have
            # reached the server, so it counts as ambiguous.
            if not self._failed_once:
                self._failed_once = True
                log.error("sending a tap failed", exc_info=exc)  # the traceback once
            text = logs.redact(f"{type(exc).__name__}: {exc}")
            return http.Reply(Retry("internal-error", text, ambiguous=True))

    def _sent(self, request: _Request, reply: http.Reply) -> None:
        """A worker thread's answer, on the loop."""
        request.client.release()
        if self._requests.get(request.tap.seq) is not request:
            return  # cancelled or given up meanwhile: its answer is not taken
        del self._requests[request.tap.seq]
        if request.backstop is not None:
            request.backstop.cancel()
        self._finished(request.tap, reply)

    def _overdue(self, seq: int, request: _Request) -> None:
        """The thread did not end its request by the deadline: given up as timed out."""
        if self._requests.get(seq) is not request:
            return
        del self._requests[seq]
        request.call.cancel()
        timeout = self._settings.uplink.timeout
        if request.call.sent:
            outcome = Retry("timeout", f"no complete answer within {timeout:g}s", ambiguous=True)
        else:
            outcome = Retry("timeout", f"no connection within {timeout:g}s")
        self._finished(request.tap, http.Reply(outcome))

    def _cancel(self, request: _Request) -> None:
        request.call.cancel()
        if request.backstop is not None:
            request.backstop.cancel()

    def _finished(self, tap: Tap, reply: http.Reply) -> None:
        scheduler = self._scheduler
        assert scheduler is not None
        now = self._monotonic()
        before = scheduler.state
        changed = scheduler.finished(tap.seq, reply.outcome, reply.retry_after_s, now)
        self._report(before, scheduler.state, scheduler.message, changed, now)
        outcome = reply.outcome
        if isinstance(outcome, Rejected) and outcome.clock_ahead:
            self._repeats.report(
                "clock-ahead",
                logging.ERROR,
                "the server says taps lie in the future: this gate's clock is ahead",
                now,
            )
        self._answers.append((tap, outcome))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_answers())
        self._event.set()
        if self._on_answer is not None:
            self._on_answer(tap, outcome)

    # -- answers -------------------------------------------------------------------

    async def _write_answers(self) -> None:
        # The answers that arrive within ANSWER_BATCH_S share one commit.
        await asyncio.sleep(ANSWER_BATCH_S)
        while self._answers:
            batch, self._answers = self._answers, []
            answers = [Answer(tap.seq, outcome) for tap, outcome in batch]
            now = datetime.now(UTC)
            written = await self._call(_settle(answers, now), "answers kept")
            if isinstance(written, _Failed):
                # Kept, with their cards still blocked, and written again: a card is
                # free for its next tap only once its answer is in the database.
                self._answers = batch + self._answers
                if self._closing:
                    return
                await asyncio.sleep(DB_RETRY_S)
                continue
            assert self._scheduler is not None
            self._scheduler.written([answer.seq for answer in answers])
            for tap, outcome in batch:
                # Logged once written: "tap delivered" in the journal means it is in the
                # database.
                if isinstance(outcome, Delivered):
                    self._delivered(tap, outcome)
                elif isinstance(outcome, Rejected):
                    self._rejected(tap, outcome)
            self._event.set()

    async def _close(self) -> None:
        # After a stop nothing is in flight; after an error the requests are abandoned
        # (their taps stay pending, guarded: the server may still be working on them).
        scheduler = self._scheduler
        if scheduler is not None:
            now = self._monotonic()
            scheduler.abandon(now)
            self._guards = scheduler.guards(now)
        for request in self._requests.values():
            self._cancel(request)
        self._requests.clear()
        self._closing = True
        if self._writer is not None:
            await self._writer
        if self._answers:
            log.warning(
                "answers not written at stop: their taps are sent again count=%d",
                len(self._answers),
            )
            self._answers = []
        if scheduler is not None and (kept := _guards_kept(self._guards)) is not None:
            # For the next process too: a restart takes about a second.
            await self._call(lambda store: store.set_meta(GUARDS_KEY, kept))
        # The threads of cancelled requests end on their own (their sockets are shut
        # down); the connections close now, under them if need be.
        for client in self._clients:
            client.http.close()
        self._clients.clear()
        self._client = None
        if self._workers is not None:
            self._workers.close()
        # Taps recorded from now on wait for the next run's scheduler (a restart).
        self._scheduler = None
        if self._db is not None:
            with contextlib.suppress(StoreError):
                await self._db.close()

    # -- what is logged ------------------------------------------------------------

    def _report(self, before: str, state: str, message: str, changed: bool, now: float) -> None:
        # One problem key per state: a change of state (retrying -> paused-auth) is news
        # and logged; the same state again is only counted and summarised.
        previous = f"uplink {before}"
        if state == "ok":
            self._repeats.resolve(previous, "uplink ok again", now)
        else:
            if changed:
                self._repeats.resolve(previous, f"uplink no longer {before}", now, logging.DEBUG)
            level = logging.WARNING if state == "retrying" else logging.ERROR
            self._repeats.report(f"uplink {state}", level, f"uplink {state}: {message}", now)
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


async def _relay(stopping: asyncio.Event, event: asyncio.Event) -> None:
    await stopping.wait()
    event.set()


def _page(after_seq: int) -> Callable[[Store], list[Tap]]:
    return lambda store: store.pending(after_seq, PAGE)


def _settle(answers: list[Answer], now: datetime) -> Callable[[Store], None]:
    return lambda store: store.settle(answers, now)


def _boot_id() -> str | None:
    try:
        return BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return None


def _guards_kept(guards: dict[int, float]) -> str | None:
    """The guards as the meta table keeps them: monotonic times, which hold for every
    process of one boot (CLOCK_MONOTONIC), with that boot's id."""
    boot = _boot_id()
    if boot is None:
        return None
    return json.dumps({"boot_id": boot, "until": {str(seq): at for seq, at in guards.items()}})


def _kept_guards(kept: str | None, now: float) -> dict[int, float]:
    """The guards an earlier process of this boot left, those still running."""
    try:
        data = json.loads(kept or "{}")
        if data.get("boot_id") != _boot_id():
            return {}
        return {int(seq): float(at) for seq, at in data["until"].items() if float(at) > now}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}  # not ours or damaged: a guard is a courtesy to the server, not a tap


def _guard(settings: Config) -> None:
    """The token this uploader sends is never shown: registered with the log redactor,
    also when a reload (SIGHUP) brings a new one."""
    if settings.uplink.token is not None:
        logs.add_secret(settings.uplink.token.get_secret_value())
