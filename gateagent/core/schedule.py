"""What the uploader does next: the delivery scheduler as a pure state machine.

Rule 1 (as in h11's `_state.py`): every decision about which tap to send, when, how many
at once, and what an answer means for the uplink lives here; `uplink/client.py` only
carries out the actions. Time is an argument, randomness the `Random` the caller passes.

Events in: `recorded(seq, tap)` (a tap was committed), `rescan()` (older taps became
pending: held taps released, a requeue), `fetched(taps)` (a page of pending taps the shell
read), `counted(oldest)` (each card with a pending tap, and its oldest), `finished(seq,
outcome)` (a request ended), `written(seqs)` (its answer is in the database),
`reconfigure(rules)`, `stop()`.
Actions out, one at a time from `next_action(now)`: `Fetch(after_seq)`, `Count()`,
`Send(tap)`, `Wait(until)`, `Cancel(seqs)`, `Finished()`.

The rules (README "Delivery"):
- Per-card order. A sweep walks the pending taps in the order they were recorded; a card
  whose earlier tap is in flight, waits for a retry, or whose answer is not written yet
  is skipped for the rest of the sweep. So a card has at most one request in flight, and
  its taps reach the server in order, without holding up other cards. A sweep ends at
  the horizon it began with: the taps recorded meanwhile go with the next one, so what a
  sweep remembers (the cards it met) is bounded by the backlog it began with, not by a
  stream of taps that never lets it end (issue 14: sets of every card of the school).
- Flush interval. A tap is sent at the first flush after it was recorded: flushes fall
  on a fixed grid (start, start + interval, ...), and a tap recorded after the latest
  flush waits for the next one (the horizon). With `0s` (and absensi) every tap is a
  flush of its own. Retries and a card's next taps go as soon as they may.
- Fresh taps first. With `0s`, a tap recorded now whose card has no older pending tap
  goes with the next free slot, before the rest of a sweep: a backlog (after an outage)
  does not hold up the person tapping now, and no card's order changes. The taps recorded
  here are known until their answers are written (`_pending`); of the others (a backlog,
  taps released or requeued), the cards are known from the database (`Count`, at start
  and after a rescan: each card's oldest pending tap, so the taps recorded while it was
  not known are judged too) and from each sweep that walked them all (the cards it leaves
  a pending tap of, and those in flight or unwritten). So what is remembered is bounded
  by the pending taps, not by the cards tapped (issue 14); and a page of taps at most
  waits to go first (in a burst, the rest go with the next sweep).
  With `concurrency` above 1 a sweep leaves one slot to fresh taps: the tap recorded now
  does not wait for one of the backlog's round trips either.
- Concurrency. `ok`: up to `concurrency` requests in flight. `retrying` / `paused-*`:
  one probe at a time, after the uplink's hold (backoff with full jitter, honouring
  `Retry-After`; slower for pauses). The first answer that is the API's own ends it, and
  with it every tap's backoff: what failed in an outage goes at once.
- Failures during one outage are one failure: the requests in flight when the first of
  them failed count no more (only a request sent after that failure, the probe, does), so
  four requests failing together do not back off like four outages in a row; and a later
  answer never moves the hold's end earlier (a `Retry-After` stays honoured).
- Ambiguous failures (timeout after sending, 502/504, connection lost after sending, a
  request cancelled at stop or abandoned) may still be running on the server, and the
  seed-000 server makes two check-ins of two overlapping requests for one student. Such a
  tap is not sent again before `ambiguous_wait_s` (the request timeout plus a margin) has
  passed, whatever else happens: a success of another tap, a reload, a new scheduler
  started with the old one's `guards()`.
- Never give up: no tap is dropped for its age or its failures.
- Stop: nothing new is sent; the requests in flight get until `FINISH_S`, then are
  cancelled (their taps stay pending and go again next time, after their guard: at least
  once).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from gateagent.core.answers import Outcome, Paused, Retry
from gateagent.core.backoff import RETRY_AFTER_MAX_S, Backoff

UplinkState = Literal["ok", "retrying", "paused-auth", "paused-config"]

# SPEC: on SIGTERM, finish the request in flight and exit "within a few seconds".
FINISH_S = 5.0
# Taps requeued by another process (`gateagent requeue`) are found by a sweep this often.
SWEEP_S = 60.0
# A request still running this long after its total deadline is stuck (the watchdog).
OVERDUE_S = 5.0
# "try again slowly" (SPEC) while the server refuses our token or gate: a probe within a
# minute, so a fix on the server shows at the gate soon after.
PAUSE_BACKOFF = Backoff(base_s=15.0, cap_s=60.0)


class Pending(Protocol):
    """What the scheduler reads of a pending tap (`store.Tap` is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def card_no(self) -> str: ...
    @property
    def attempts(self) -> int: ...


T = TypeVar("T", bound=Pending)


@dataclass(frozen=True)
class Rules:
    """The settings the scheduler follows (from `[uplink]`)."""

    concurrency: int
    flush_interval_s: float  # 0: each tap is sent as soon as it is recorded
    timeout_s: float  # one request's total deadline
    ambiguous_wait_s: float  # no retry of an ambiguous failure before this has passed
    backoff: Backoff
    pause_backoff: Backoff


@dataclass(frozen=True)
class Fetch:
    """Read the pending taps after `after_seq` (a page) and give them to `fetched()`."""

    after_seq: int


@dataclass(frozen=True)
class Count:
    """Read the cards that have a pending tap and give them to `counted()`."""


@dataclass(frozen=True)
class Send(Generic[T]):
    """Start the request of this tap; report its end with `finished()`."""

    tap: T


@dataclass(frozen=True)
class Wait:
    """Nothing to do before `until`, or before the next event."""

    until: float


@dataclass(frozen=True)
class Cancel:
    """Abandon these requests (stop): their taps stay pending."""

    seqs: tuple[int, ...]


@dataclass(frozen=True)
class Finished:
    """Stopped: write the answers still unwritten and close."""


Action = Fetch | Count | Send[T] | Wait | Cancel | Finished


@dataclass
class _Sweep(Generic[T]):
    seen: set[str]
    until: int  # the horizon it began with: it ends at the first tap after it
    cursor: int = 0
    page: deque[T] | None = None  # None: the next page is still to be read
    last_page: bool = False
    # The cards it leaves a pending tap of (met and skipped, or sent and answered with a
    # retry or a pause): with the cards in flight or unwritten at its end, every card
    # with a pending tap up to `until`.
    left: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Flight:
    card_no: str
    started_at: float
    attempts: int  # the tap's attempts before this one, as fetched
    round: int  # the uplink's failures counted when it was sent


class Scheduler(Generic[T]):
    def __init__(
        self,
        rules: Rules,
        now: float,
        latest_seq: int,
        rng: random.Random,
        page_size: int,
        *,
        guards: Mapping[int, float] | None = None,
    ) -> None:
        """`guards`: an earlier scheduler's `guards()` (the uploader's run restarted):
        those requests may still be running on the server."""
        self.rules = rules
        self.state: UplinkState = "ok"
        self.message = ""
        self._rng = rng
        self._page_size = page_size
        self._failures = 0
        # Failures counted so far, never reset: a request failing in the round it was
        # sent in counts, those of an earlier round (in flight when it failed) do not.
        self._round = 0
        self._hold_until = 0.0
        self._retry_at: dict[int, float] = {}  # backoff: ends with the uplink's recovery
        # Ambiguous attempts: ends only with time.
        self._guard_until = {seq: at for seq, at in (guards or {}).items() if at > now}
        self._in_flight: dict[int, _Flight] = {}
        self._unwritten: dict[int, tuple[str, bool]] = {}  # seq -> card, settled
        # Taps with a seq above the horizon wait for the next flush; start is a flush.
        self._latest = latest_seq
        self._horizon = latest_seq
        self._flush_origin = now
        self._flushes = 1
        self._next_rescan = now + SWEEP_S
        # A retry, guard or hold ends: a sweep is due.
        self._timer_at = min(self._guard_until.values(), default=float("inf"))
        self._sweep: _Sweep[T] | None = None
        self._want_sweep = True
        self._restart = False
        self._stop_at: float | None = None
        # With `0s`: the taps recorded here that are pending, by card, until their
        # answers are written (a card with one is busy, for certain).
        self._pending: dict[str, list[int]] = {}
        # Cards that may have a pending tap not recorded here (None: not known); fresh
        # taps of the cards busy in neither go first, from `_fresh`. While not known: the
        # pending taps recorded and not sent since, judged by the next Count.
        self._busy: set[str] | None = None
        self._candidates: dict[int, T] = {}
        self._counting = False  # a Count is being read
        self._count_stale = False  # taps became pending since it was asked for
        self._count_wanted = rules.flush_interval_s == 0
        self._fresh: deque[T] = deque()

    # -- events --------------------------------------------------------------------

    def recorded(self, seq: int, tap: T | None = None) -> bool:
        """Tap `seq` was committed; `tap` is it when it is pending (not held or ignored).

        True: ask `next_action` again now (with `0s` the tap goes at once). False: the
        `Wait` it returned last still holds, as the tap goes with the next flush, so the
        shell need not wake up for it (at a gate, that wake-up cost a lone tap a fifth
        of its instructions)."""
        self._latest = max(self._latest, seq)
        at_once = self.rules.flush_interval_s == 0
        if at_once:
            self._horizon = self._latest
            self._want_sweep = True
        if tap is None or not at_once:
            return at_once  # with a flush interval no tap goes first: nothing to know
        card = tap.card_no
        if self._busy is None:
            if len(self._candidates) < self._page_size:
                self._candidates[tap.seq] = tap
        elif (
            card not in self._busy
            and card not in self._pending
            # A page at most: in a burst the rest go with the next sweep, in order.
            and len(self._fresh) < self._page_size
        ):
            self._fresh.append(tap)
        self._pending.setdefault(card, []).append(tap.seq)
        return at_once

    def counted(self, oldest: Mapping[str, int] | None) -> None:
        """Each card with a pending tap and the seq of its oldest, as the database has
        them (None: not read)."""
        if not self._counting:
            return
        self._counting = False
        if oldest is None or self._count_stale or self._busy is not None:
            return
        judged: set[str] = set()
        for tap in self._candidates.values():  # in the order they were recorded
            card = tap.card_no
            # The oldest pending tap of its card (or committed after the count): first.
            if card not in judged and oldest.get(card, tap.seq) == tap.seq:
                self._fresh.append(tap)
            judged.add(card)
        self._know_busy(set(oldest))

    def rescan(self) -> None:
        """Taps older than the sweep's position became pending: sweep again from the
        oldest, so they keep their place in card order."""
        self._want_sweep = True
        self._restart = True
        # Their cards are not known: no fresh tap may overtake them.
        self._forget_busy()

    def fetched(self, taps: list[T]) -> None:
        sweep = self._sweep
        if sweep is None or sweep.page is not None:
            return  # the sweep was restarted while the page was read: it reads again
        sweep.page = deque(taps)
        sweep.last_page = len(taps) < self._page_size

    def finished(self, seq: int, outcome: Outcome, retry_after_s: float | None, now: float) -> bool:
        """A request ended. True if the uplink's state changed (see `state`, `message`)."""
        flight = self._in_flight.pop(seq, None)
        if flight is None:
            return False  # cancelled at stop; its answer is not taken
        settled = not isinstance(outcome, Retry | Paused)
        self._unwritten[seq] = (flight.card_no, settled)
        rules = self.rules
        if not settled:
            if self._sweep is not None:
                self._sweep.left.add(flight.card_no)  # its tap stays pending
            hold = 0.0
            if flight.round == self._round:
                # The first failure since this request was sent: a hold of its own.
                self._failures += 1
                self._round += 1
                backoff = rules.backoff if isinstance(outcome, Retry) else rules.pause_backoff
                hold = now + backoff.delay(self._failures, retry_after_s, self._rng)
            elif retry_after_s is not None:
                # In flight when the outage was counted: only the server's own wish
                # lengthens the hold.
                hold = now + min(retry_after_s, RETRY_AFTER_MAX_S)
            if hold > self._hold_until:
                self._hold_until = hold
                self._timer_at = min(self._timer_at, hold)
        if isinstance(outcome, Retry):
            attempt = flight.attempts + 1
            self._retry_at[seq] = now + rules.backoff.delay(attempt, retry_after_s, self._rng)
            if outcome.ambiguous:
                self._guard_until[seq] = now + rules.ambiguous_wait_s
            self._timer_at = min(self._timer_at, self._retry_at[seq])
            return self._set_state("retrying", f"{outcome.reason} {outcome.message}".strip())
        if isinstance(outcome, Paused):
            return self._set_state(outcome.state, outcome.message)
        # The API answered about this tap: the server is back. Taps that failed in the
        # outage go at once (their backoff was about the server, not about them).
        self._retry_at.clear()
        self._failures = 0
        self._hold_until = 0.0
        return self._set_state("ok", "")

    def written(self, seqs: list[int]) -> None:
        """These answers are in the database: their cards may send their next taps."""
        for seq in seqs:
            card, settled = self._unwritten.pop(seq, ("", False))
            recorded = self._pending.get(card)
            if settled and recorded is not None and seq in recorded:
                # Not pending any more. (A tap not recorded here is not in the list.)
                recorded.remove(seq)
                if not recorded:
                    del self._pending[card]
        self._want_sweep = True

    def reconfigure(self, rules: Rules, now: float, new_endpoint: bool) -> None:
        """New settings. A new endpoint (url, token, profile, gate) is tried at once: the
        old one's backoff and hold say nothing about it. Ambiguous guards stay: the old
        server may still be working on those requests."""
        old, self.rules = self.rules, rules
        if rules.flush_interval_s != old.flush_interval_s:
            # A flush now, then the new grid; and a sweep from the oldest, begun under
            # the new rules (the end of one begun under a flush interval, whose horizon
            # lags and whose taps recorded were not counted, tells nothing of `0s`).
            self._flush_origin, self._flushes = now, 0
            self._horizon = self._latest
            self._want_sweep = self._restart = True
            self._forget_busy()
        if new_endpoint:
            self._retry_at.clear()
            self._failures = 0
            self._hold_until = 0.0
            self._want_sweep = True

    def stop(self, now: float) -> None:
        if self._stop_at is None:
            self._stop_at = now + FINISH_S
        self._fresh.clear()

    def abandon(self, now: float) -> tuple[int, ...]:
        """The requests in flight are given up (the uploader's run ended by an error):
        their taps stay pending, guarded like an ambiguous failure."""
        seqs = tuple(self._in_flight)
        self._in_flight.clear()
        for seq in seqs:
            self._guard_until[seq] = now + self.rules.ambiguous_wait_s
        return seqs

    # -- queries -------------------------------------------------------------------

    def capacity(self, now: float) -> int:
        """How many requests may be in flight now."""
        if self.state == "ok":
            return self.rules.concurrency
        return 0 if now < self._hold_until else 1  # one probe at a time

    def _sweep_capacity(self, now: float) -> int:
        """A sweep's share of the slots: with `0s` one is kept free for fresh taps while
        there are several, so a tap recorded now never waits for a backlog's request."""
        capacity = self.capacity(now)
        if self.rules.flush_interval_s == 0 and self.state == "ok" and capacity > 1:
            return capacity - 1
        return capacity

    def in_flight(self) -> int:
        return len(self._in_flight)

    def guards(self, now: float) -> dict[int, float]:
        """The taps not to be sent before a time (ambiguous attempts), for a scheduler
        that takes over from this one."""
        return {seq: at for seq, at in self._guard_until.items() if at > now}

    def overdue(self, now: float) -> list[int]:
        """Requests running well past their total deadline: something is stuck."""
        limit = self.rules.timeout_s + OVERDUE_S
        return [seq for seq, flight in self._in_flight.items() if now - flight.started_at > limit]

    # -- the next action -----------------------------------------------------------

    def next_action(self, now: float) -> Action[T]:
        if self._stop_at is not None:
            if not self._in_flight:
                return Finished()
            if now >= self._stop_at:
                # A cancelled request may still be running on the server.
                return Cancel(self.abandon(now))
            return Wait(self._stop_at)
        self._timers(now)
        return self._before_sweep(now) or self._sweep_on(now)

    def _before_sweep(self, now: float) -> Count | Send[T] | None:
        if self._count_wanted and not self._counting:
            self._count_wanted = self._count_stale = False
            self._counting = True
            return Count()
        while self._fresh and not self._due(self._fresh[0].seq, now):
            self._fresh.popleft()  # guarded (a seq reused by a new database): its sweep
        if self._fresh and len(self._in_flight) < self.capacity(now):
            tap = self._fresh.popleft()
            if self._sweep is not None:
                self._sweep.seen.add(tap.card_no)  # the sweep meets it later: skipped
            return self._send(tap, now)
        return None

    def _sweep_on(self, now: float) -> Action[T]:
        while True:
            sweep = self._sweep
            if sweep is None or self._restart:
                if not self._want_sweep:
                    return Wait(self._wake_at())
                sweep = self._sweep = _Sweep(self._blocked_cards(), self._horizon)
                self._want_sweep = self._restart = False
            if sweep.page is None:
                return Fetch(sweep.cursor)
            if not sweep.page:
                if sweep.last_page:
                    self._end_whole_sweep(sweep, now)
                    continue
                sweep.page = None
                continue
            tap = sweep.page[0]
            if tap.seq > sweep.until:
                # The rest was recorded after it began (or after the flush it began with):
                # the next sweep's.
                self._end_whole_sweep(sweep, now)
                continue
            # `seen` holds the cards in flight or unwritten when the sweep began, and every
            # card met since: so a card's tap never overtakes or overlaps an earlier one.
            if tap.card_no not in sweep.seen and self._due(tap.seq, now):
                if len(self._in_flight) >= self._sweep_capacity(now):
                    return Wait(self._wake_at())  # the sweep goes on when a slot frees
                sweep.seen.add(tap.card_no)
                self._step(sweep, tap)
                return self._send(tap, now)
            sweep.seen.add(tap.card_no)  # a card's later taps wait behind this one
            sweep.left.add(tap.card_no)
            self._step(sweep, tap)

    # -- internals -----------------------------------------------------------------

    @staticmethod
    def _step(sweep: _Sweep[T], tap: T) -> None:
        assert sweep.page is not None
        sweep.page.popleft()
        sweep.cursor = tap.seq

    def _send(self, tap: T, now: float) -> Send[T]:
        self._in_flight[tap.seq] = _Flight(tap.card_no, now, tap.attempts, self._round)
        self._candidates.pop(tap.seq, None)
        return Send(tap)

    def _end_whole_sweep(self, sweep: _Sweep[T], now: float) -> None:
        """The sweep walked every pending tap up to its horizon. With `0s` (all along:
        a new interval restarts it) the horizon is the latest tap when it began, so a
        pending tap now was recorded since (in `_pending`), was left behind by it, or is
        in flight or unwritten; a candidate it did not send waits behind its card's older
        tap. The cards whose taps it delivered are not kept: their next taps go first
        again."""
        if not self._counting and self.rules.flush_interval_s == 0:
            sweep.left |= self._blocked_cards()  # it ends: its set is handed on
            self._know_busy(sweep.left)
        self._end_sweep(now)

    def _know_busy(self, cards: set[str]) -> None:
        self._busy = cards
        self._candidates.clear()

    def _forget_busy(self) -> None:
        # Fresh taps not sent yet are judged again by the next Count: a tap that became
        # pending may be older than theirs.
        for tap in self._fresh:
            self._candidates[tap.seq] = tap
        self._fresh.clear()
        self._busy = None
        self._count_stale = self._counting
        self._count_wanted = self.rules.flush_interval_s == 0

    def _due(self, seq: int, now: float) -> bool:
        return self._retry_at.get(seq, 0.0) <= now and self._guard_until.get(seq, 0.0) <= now

    def _blocked_cards(self) -> set[str]:
        cards = {flight.card_no for flight in self._in_flight.values()}
        cards.update(card for card, _ in self._unwritten.values())
        return cards

    def _next_flush(self) -> float:
        return self._flush_origin + self._flushes * self.rules.flush_interval_s

    def _timers(self, now: float) -> None:
        interval = self.rules.flush_interval_s
        if interval > 0 and now >= self._next_flush():
            # On the grid, however late this runs: the interval means what it says.
            self._flushes = int((now - self._flush_origin) // interval) + 1
            if self._latest > self._horizon:
                self._horizon = self._latest
                self._want_sweep = True
        if now >= self._next_rescan:
            self._next_rescan = now + SWEEP_S
            self._want_sweep = True
        if now >= self._timer_at:
            self._want_sweep = True
            self._next_timer(now)

    def _end_sweep(self, now: float) -> None:
        self._sweep = None
        self._next_timer(now)

    def _next_timer(self, now: float) -> None:
        """Drop the retries, guards and hold that ended; the earliest of those still
        running wakes the next sweep (or a sweep stalled for want of a slot)."""
        self._retry_at = {seq: at for seq, at in self._retry_at.items() if at > now}
        self._guard_until = {seq: at for seq, at in self._guard_until.items() if at > now}
        ends = [*self._retry_at.values(), *self._guard_until.values()]
        if self._hold_until > now:
            ends.append(self._hold_until)
        self._timer_at = min(ends, default=float("inf"))

    def _wake_at(self) -> float:
        at = min(self._timer_at, self._next_rescan)
        if self.rules.flush_interval_s > 0:
            at = min(at, self._next_flush())
        return at

    def _set_state(self, state: UplinkState, message: str) -> bool:
        changed = state != self.state
        self.state, self.message = state, message
        return changed
