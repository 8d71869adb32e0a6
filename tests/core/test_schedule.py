"""The delivery scheduler against a reference model (STYLE 4: `RuleBasedStateMachine`).

The machine plays the uploader's shell and the server: it records taps, answers the
scheduler's actions (a page of pending taps, a request), finishes requests with any
outcome, writes answers, moves the clock, reloads, rescans, restarts the uploader's run
(a new scheduler after an error) and stops, in any order. Time only moves the way the
shell moves it: to the end of a `Wait`, or by an event. A page is read when it is asked
for and handed over later, as the uploader awaits its database thread: taps recorded,
answered and written meanwhile find the scheduler waiting for it, and the page it gets
may hold taps settled since.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateagent.core.answers import Delivered, Outcome, Paused, Rejected, Retry
from gateagent.core.backoff import Backoff
from gateagent.core.schedule import (
    FINISH_S,
    Cancel,
    Count,
    Fetch,
    Finished,
    Rules,
    Scheduler,
    Send,
    Wait,
)

PAGE = 3  # small, so sweeps span pages
AMBIGUOUS_WAIT_S = 12.0
CARDS = ["A", "B", "C", "D"]
# Binary fractions: every sum of these times is exact, so the flush grid is exact too.
INTERVALS = [0.0, 0.5, 2.0, 5.0, 30.0]
LONGEST_WAIT_S = max(*INTERVALS, 8.0, 16.0, AMBIGUOUS_WAIT_S)
STEPS = st.sampled_from([0.0, 0.25, 0.5, 1.0, 4.0, 16.0, 64.0])


@dataclass
class ModelTap:
    seq: int
    card_no: str
    attempts: int
    recorded_at: float
    settled: bool = False


OUTCOMES: list[Outcome] = [
    Delivered(),
    Rejected("unknown-card", 404, "No student found"),
    Retry("http-503", "", 503),
    Retry("timeout", "no answer within 10s", ambiguous=True),
    Retry("http-504", "Gateway Time-out", 504, ambiguous=True),
    Paused("paused-auth", 400, "Invalid authentication token"),
    Paused("paused-config", 404, "Campus gate not found"),
]


def rules(concurrency: int, interval: float) -> Rules:
    return Rules(
        concurrency=concurrency,
        flush_interval_s=interval,
        timeout_s=10.0,
        ambiguous_wait_s=AMBIGUOUS_WAIT_S,
        backoff=Backoff(base_s=0.5, cap_s=8.0),
        pause_backoff=Backoff(base_s=2.0, cap_s=16.0),
    )


class Delivery(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.taps: dict[int, ModelTap] = {}
        self.server: dict[int, float] = {}  # seq -> sent at
        self.unwritten: dict[int, Outcome] = {}
        self.guard: dict[int, float] = {}  # seq -> not to be sent again before
        # No probe before this while failing: the longest Retry-After of the outage.
        self.retry_after_until = 0.0
        self.eras: list[tuple[float, float]] = []  # (from, flush interval)
        self.concurrency = 1
        self.state = "ok"
        self.stop_at: float | None = None
        self.counting = False  # a Count is being read
        self.done = False
        self.scheduler: Scheduler[ModelTap] | None = None
        self.waiting: Wait | None = None  # what the shell carries out until an event
        self.reading: list[ModelTap] | None = None  # a page read, not yet handed over

    # -- setting up ----------------------------------------------------------------

    @precondition(lambda self: self.scheduler is None)
    @rule(
        backlog=st.lists(st.sampled_from(CARDS), max_size=6),
        concurrency=st.integers(1, 4),
        interval=st.sampled_from(INTERVALS),
        seed=st.integers(0, 2**32),
    )
    def start(self, backlog: list[str], concurrency: int, interval: float, seed: int) -> None:
        for card_no in backlog:
            self._new_tap(card_no)
        self.concurrency = concurrency
        self.eras.append((self.now, interval))
        self.scheduler = Scheduler(
            rules(concurrency, interval), self.now, len(self.taps), random.Random(seed), PAGE
        )
        self._act()

    # -- events --------------------------------------------------------------------

    @precondition(lambda self: self.scheduler is not None)
    @rule(card_no=st.sampled_from(CARDS))
    def record(self, card_no: str) -> None:
        assert self.scheduler is not None
        tap = self._new_tap(card_no)
        if self.scheduler.recorded(tap.seq, tap):
            self._act()
        elif self.waiting is not None:
            # Not asked again (the uploader is not woken): the wait it is in must hold.
            assert self.scheduler.next_action(self.now) == self.waiting

    @precondition(lambda self: self.reading is not None)
    @rule()
    def page(self) -> None:
        """The database thread hands over the page it read."""
        self._hand_over()
        self._act()

    @precondition(lambda self: self.counting)
    @rule(read=st.booleans())
    def count(self, read: bool) -> None:
        """The database answers a Count: the oldest tap not settled yet of each card (or
        the read failed)."""
        assert self.scheduler is not None
        self.counting = False
        self.scheduler.counted(oldest(self.taps.values()) if read else None)
        self._act()

    @precondition(lambda self: self.scheduler is not None)
    @rule(step=STEPS)
    def advance(self, step: float) -> None:
        self._advance_to(self.now + step)

    @precondition(lambda self: bool(self.server))
    @rule(data=st.data(), retry_after=st.sampled_from([None, None, 0.0, 3.0]))
    def finish(self, data: st.DataObject, retry_after: float | None) -> None:
        assert self.scheduler is not None
        seq = data.draw(st.sampled_from(sorted(self.server)))
        outcome = data.draw(st.sampled_from(OUTCOMES))
        del self.server[seq]
        self.scheduler.finished(seq, outcome, retry_after, self.now)
        self.unwritten[seq] = outcome
        if isinstance(outcome, Retry) and outcome.ambiguous:
            self.guard[seq] = self.now + AMBIGUOUS_WAIT_S
        if isinstance(outcome, Retry | Paused) and retry_after is not None:
            self.retry_after_until = max(self.retry_after_until, self.now + retry_after)
        if isinstance(outcome, Retry):
            self.state = "retrying"
        elif isinstance(outcome, Paused):
            self.state = outcome.state
        else:
            self.state = "ok"
            self.retry_after_until = 0.0
        assert self.scheduler.state == self.state
        self._act()

    @precondition(lambda self: bool(self.unwritten))
    @rule()
    def write(self) -> None:
        assert self.scheduler is not None
        for seq, outcome in self.unwritten.items():
            tap = self.taps[seq]
            tap.attempts += 1
            tap.settled = isinstance(outcome, Delivered | Rejected)
        self.scheduler.written(list(self.unwritten))
        self.unwritten.clear()
        self._act()

    @precondition(lambda self: self.scheduler is not None)
    @rule()
    def rescan(self) -> None:
        assert self.scheduler is not None
        self.scheduler.rescan()
        self._act()

    @precondition(lambda self: self.scheduler is not None and self.stop_at is None)
    @rule(
        concurrency=st.integers(1, 4),
        interval=st.sampled_from(INTERVALS),
        new_endpoint=st.booleans(),
    )
    def reload(self, concurrency: int, interval: float, new_endpoint: bool) -> None:
        assert self.scheduler is not None
        self.scheduler.reconfigure(rules(concurrency, interval), self.now, new_endpoint)
        if interval != self.eras[-1][1]:
            self.eras.append((self.now, interval))
        if new_endpoint:
            self.retry_after_until = 0.0  # the old endpoint's wish is not the new one's
        self.concurrency = concurrency
        self._act()

    @precondition(lambda self: self.scheduler is not None and self.stop_at is None)
    @rule(seed=st.integers(0, 2**32))
    def restart(self, seed: int) -> None:
        """The uploader's run ended by an error and the supervisor started a new one: the
        requests in flight are abandoned, answers not yet written are lost, and the new
        scheduler starts from the database with the old one's guards."""
        old = self.scheduler
        assert old is not None
        for seq in old.abandon(self.now):
            del self.server[seq]
            self.guard[seq] = self.now + AMBIGUOUS_WAIT_S
        self.unwritten.clear()
        self.counting = False
        self.reading = None  # the old run's
        interval = self.eras[-1][1]
        self.eras.append((self.now, interval))  # a new scheduler's start is a flush
        self.state = "ok"
        self.retry_after_until = 0.0
        self.scheduler = Scheduler(
            rules(self.concurrency, interval),
            self.now,
            len(self.taps),
            random.Random(seed),
            PAGE,
            guards=old.guards(self.now),
        )
        self._act()

    @precondition(lambda self: self.scheduler is not None and self.stop_at is None)
    @rule()
    def stop(self) -> None:
        assert self.scheduler is not None
        self.scheduler.stop(self.now)
        self.stop_at = self.now
        self._act()

    # -- what must always hold -----------------------------------------------------

    @invariant()
    def in_flight_agrees(self) -> None:
        if self.scheduler is not None:
            assert self.scheduler.in_flight() == len(self.server)

    @invariant()
    def stops_in_time(self) -> None:
        if self.stop_at is not None and self.now >= self.stop_at + FINISH_S:
            assert self.done
            assert not self.server

    def teardown(self) -> None:
        """Never give up: once the server answers, every recorded tap is delivered."""
        if self.scheduler is None or self.stop_at is not None:
            return
        for _ in range(50 + 20 * len(self.taps)):
            if self._all_settled():
                return
            for seq in sorted(self.server):
                del self.server[seq]
                self.scheduler.finished(seq, Delivered(), None, self.now)
                self.unwritten[seq] = Delivered()
                self.state = "ok"
            if self.unwritten:
                self.write()
            if self.counting:
                self.count(read=True)
            if self._all_settled():
                return
            wait = self._act_with_pages()
            assert isinstance(wait, Wait)
            if self.server:
                continue  # answered in the next round
            # Something is always due within the longest of the flush interval, the
            # backoff and pause caps and the ambiguous guard: never the 60 s rescan.
            assert wait.until - self.now <= LONGEST_WAIT_S, "a due tap waits for nothing"
            self._advance_to(wait.until)
        pytest.fail(f"taps never delivered: {[t for t in self.taps.values() if not t.settled]}")

    def _all_settled(self) -> bool:
        if not all(tap.settled for tap in self.taps.values()):
            return False
        # Issue 14: what it remembers of the taps recorded is bounded by those pending.
        assert self.scheduler is not None
        assert not self.scheduler._pending, "a settled tap is remembered"
        return True

    # -- the shell -----------------------------------------------------------------

    def _new_tap(self, card_no: str) -> ModelTap:
        tap = ModelTap(len(self.taps) + 1, card_no, 0, self.now)
        self.taps[tap.seq] = tap
        return tap

    def _hand_over(self) -> None:
        assert self.scheduler is not None and self.reading is not None
        taps, self.reading = self.reading, None
        self.scheduler.fetched(taps)

    def _act_with_pages(self) -> Wait | Finished:
        """Act, each page handed over as soon as it is read (time is about to pass: the
        database answers well within any step of the clock)."""
        while True:
            if self.reading is not None:
                self._hand_over()
            action = self._act()
            if action is not None:
                return action

    def _advance_to(self, target: float) -> None:
        while True:
            action = self._act_with_pages()
            if isinstance(action, Wait) and action.until <= target:
                self.now = action.until
                continue
            self.now = target
            return

    def _act(self) -> Wait | Finished | None:
        """Carry out actions until the scheduler waits or has finished; None: until the
        page asked for is handed over, as the uploader awaits it."""
        assert self.scheduler is not None
        for _ in range(1000):
            if self.done:
                return Finished()
            if self.reading is not None:
                return None
            action = self.scheduler.next_action(self.now)
            if isinstance(action, Fetch):
                pending = [
                    tap
                    for seq, tap in sorted(self.taps.items())
                    if seq > action.after_seq and not tap.settled
                ]
                self.reading = pending[:PAGE]
                self.waiting = None
            elif isinstance(action, Count):
                assert not self.counting, "a second Count while one is read"
                self.counting = True
            elif isinstance(action, Send):
                self._check_send(action.tap)
                self.server[action.tap.seq] = self.now
            elif isinstance(action, Cancel):
                assert self.stop_at is not None
                for seq in action.seqs:
                    del self.server[seq]
                    # A cancelled request may still be running on the server.
                    self.guard[seq] = self.now + AMBIGUOUS_WAIT_S
            elif isinstance(action, Finished):
                assert self.stop_at is not None
                assert not self.server
                self.done = True
                self.waiting = None
                return action
            else:
                assert isinstance(action, Wait)
                assert action.until > self.now, "a wait that ends at once spins the loop"
                self.waiting = action
                return action
        pytest.fail("the scheduler never waits")

    def _check_send(self, tap: ModelTap) -> None:
        assert self.stop_at is None, "sent after stop"
        assert not tap.settled, "sent again after it was settled"
        busy = {self.taps[seq].card_no for seq in (*self.server, *self.unwritten)}
        assert tap.card_no not in busy, "two requests of one card at once"
        earlier = [t for t in self.taps.values() if t.card_no == tap.card_no and t.seq < tap.seq]
        assert all(t.settled for t in earlier), "a tap overtook an earlier one of its card"
        if self.state == "ok":
            assert len(self.server) < self.concurrency, "over the concurrency"
        else:
            assert not self.server, "more than one probe while the server fails"
            assert self.now >= self.retry_after_until, "a probe before the server's Retry-After"
        assert self.now >= self.guard.get(tap.seq, 0.0), "overlaps an ambiguous attempt"
        assert self.now >= self._flushed_at(tap), "sent before the flush after its recording"

    def _flushed_at(self, tap: ModelTap) -> float:
        """The first flush at or after the tap was recorded, by the era it was recorded in
        (a reload that changes the interval flushes at once)."""
        index = max(i for i, (start, _) in enumerate(self.eras) if start <= tap.recorded_at)
        start, interval = self.eras[index]
        at = tap.recorded_at
        if interval > 0:
            at = start + math.ceil((tap.recorded_at - start) / interval) * interval
        if index + 1 < len(self.eras):
            at = min(at, self.eras[index + 1][0])
        return at


Delivery.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDelivery = Delivery.TestCase


# -- the failures of issue 11, one example each ------------------------------------


def oldest(taps: Iterable[ModelTap]) -> dict[str, int]:
    """What `Store.oldest_pending_by_card` reads: each card's oldest unsettled tap."""
    found: dict[str, int] = {}
    for tap in sorted(taps, key=lambda tap: tap.seq):
        if not tap.settled:
            found.setdefault(tap.card_no, tap.seq)
    return found


def scheduler(*taps: ModelTap, interval: float = 0.0, concurrency: int = 4) -> Scheduler[ModelTap]:
    return Scheduler(rules(concurrency, interval), 0.0, len(taps), random.Random(1), PAGE)


def run_until_wait(
    sched: Scheduler[ModelTap], now: float, pending: list[ModelTap]
) -> tuple[list[ModelTap], Wait | Finished | Cancel]:
    """Act as the shell does; return the taps sent and the action it stopped at."""
    sent = []
    while True:
        action = sched.next_action(now)
        if isinstance(action, Fetch):
            sched.fetched([tap for tap in pending if tap.seq > action.after_seq][:PAGE])
        elif isinstance(action, Count):
            sched.counted(oldest(pending))
        elif isinstance(action, Send):
            sent.append(action.tap)
        else:
            assert isinstance(action, Wait | Finished | Cancel)
            return sent, action


def test_a_long_flush_interval_means_what_it_says() -> None:
    # Item 6: "1h" delivered a tap after 4 s, because a heartbeat ran a whole pass.
    sched = scheduler(interval=3600.0)
    assert run_until_wait(sched, 0.0, []) == ([], Wait(60.0))
    tap = ModelTap(1, "A", 0, 4.0)
    sched.recorded(1)
    for now in (4.0, 60.0, 1800.0, 3599.75):
        sent, action = run_until_wait(sched, now, [tap])
        assert sent == []
        assert isinstance(action, Wait)
    assert run_until_wait(sched, 3600.0, [tap])[0] == [tap]


def test_stop_abandons_requests_that_hang_after_finish_s() -> None:
    # Item 5: a stop waited for the slowest request (23 s seen).
    taps = [ModelTap(1, "A", 0, 0.0), ModelTap(2, "B", 0, 0.0)]
    sched = scheduler(*taps)
    assert run_until_wait(sched, 0.0, taps)[0] == taps
    sched.stop(1.0)
    assert sched.next_action(1.0) == Wait(1.0 + FINISH_S)
    assert sched.next_action(1.0 + FINISH_S) == Cancel((1, 2))
    assert sched.next_action(1.0 + FINISH_S) == Finished()


def test_a_rescan_during_a_sweep_is_not_lost() -> None:
    # Item 7: a rescan during a pass was overwritten by the pass's cursor.
    late = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(2, 9)]
    sched = scheduler(*late, concurrency=1)
    sent, _ = run_until_wait(sched, 0.0, late)
    assert sent == late[:1]
    released = ModelTap(1, "X", 0, 0.0)  # a held tap released: older than the sweep
    sched.rescan()
    sched.finished(2, Delivered(), None, 0.5)
    sched.written([2])
    sent, _ = run_until_wait(sched, 0.5, [released, *late[1:]])
    assert sent == [released]


def test_a_new_endpoint_is_tried_at_once() -> None:
    # Item 7: a URL fixed with SIGHUP waited for the old URL's pause.
    tap = ModelTap(1, "A", 0, 0.0)
    sched = scheduler(tap)
    run_until_wait(sched, 0.0, [tap])
    sched.finished(1, Paused("paused-config", 404, "Campus gate not found"), None, 0.0)
    sched.written([1])
    tap.attempts = 1
    assert run_until_wait(sched, 0.1, [tap])[0] == []
    sched.reconfigure(rules(4, 0.0), 0.1, new_endpoint=True)
    assert run_until_wait(sched, 0.1, [tap])[0] == [tap]


@pytest.mark.parametrize(
    "outcome",
    [
        Retry("timeout", "no answer within 10s", ambiguous=True),
        Retry("http-504", "Gateway Time-out", 504, ambiguous=True),
        Retry("connection-error", "RemoteProtocolError", ambiguous=True),
    ],
    ids=["timeout", "504", "connection-lost"],
)
def test_an_ambiguous_attempt_is_not_overlapped(outcome: Retry) -> None:
    # Item 9: a 504 retried after a second while the server still ran the first attempt.
    tap, other = ModelTap(1, "A", 0, 0.0), ModelTap(2, "B", 0, 0.0)
    sched = scheduler(tap, other, concurrency=1)
    run_until_wait(sched, 0.0, [tap, other])
    sched.finished(1, outcome, None, 1.0)
    sched.written([1])
    sent, _ = run_until_wait(sched, 9.0, [tap, other])
    assert sent == [other]  # the server is probed with another card meanwhile
    sched.finished(2, Delivered(), None, 9.5)  # the server is back: backoffs end ...
    sched.written([2])
    assert run_until_wait(sched, 9.5, [tap])[0] == []  # ... but not the guard
    assert run_until_wait(sched, 1.0 + AMBIGUOUS_WAIT_S, [tap])[0] == [tap]


def test_a_request_past_its_deadline_is_overdue() -> None:
    tap = ModelTap(1, "A", 0, 0.0)
    sched = scheduler(tap)
    run_until_wait(sched, 0.0, [tap])
    assert sched.overdue(14.0) == []
    assert sched.overdue(15.5) == [1]


class Top(random.Random):
    """Full jitter at its top: every delay is the longest the backoff allows."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_failures_in_flight_together_count_once() -> None:
    # Issue 14: four requests failing in one outage counted four failures, so the probe
    # waited as after a fourth outage in a row (4 s here) instead of after the first.
    taps = [ModelTap(seq, card, 0, 0.0) for seq, card in enumerate(CARDS, 1)]
    # A flush interval: with 0s a sweep would leave one of the four slots free.
    sched = Scheduler(rules(4, 30.0), 0.0, len(taps), Top(), PAGE)
    assert run_until_wait(sched, 0.0, taps)[0] == taps
    for tap in taps:
        sched.finished(tap.seq, Retry("http-503", "", 503), None, 1.0)
        tap.attempts = 1
    sched.written([tap.seq for tap in taps])
    assert run_until_wait(sched, 1.0, taps) == ([], Wait(1.5))
    # One probe once the first failure's hold (0.5 s) has passed.
    assert run_until_wait(sched, 1.5, taps)[0] == taps[:1]


def test_a_later_failure_never_shortens_the_hold() -> None:
    # Issue 14: each failure overwrote the hold, so a 503 right after a 429 asking for
    # 3 s brought the probe forward to 1 s.
    taps = [ModelTap(1, "A", 0, 0.0), ModelTap(2, "B", 0, 0.0)]
    sched = Scheduler(rules(4, 0.0), 0.0, len(taps), Top(), PAGE)
    run_until_wait(sched, 0.0, taps)
    sched.finished(1, Retry("http-429", "", 429), 3.0, 1.0)
    sched.finished(2, Retry("http-503", "", 503), None, 1.0)
    sched.written([1, 2])
    for tap in taps:
        tap.attempts = 1
    assert run_until_wait(sched, 2.0, taps)[0] == []  # B is due, the server's hold is not over
    assert run_until_wait(sched, 4.0, taps)[0] == taps[1:]  # the probe


def test_a_new_scheduler_keeps_the_guards_of_the_old() -> None:
    # Issue 14 item 1: a request cancelled at stop or abandoned by a restarted run was
    # sent again at once by the next run, while the server might still be running it.
    taps = [ModelTap(1, "A", 0, 0.0), ModelTap(2, "B", 0, 0.0)]
    old = scheduler(*taps)
    run_until_wait(old, 0.0, taps)
    old.stop(1.0)
    old.finished(2, Delivered(), None, 2.0)  # B's answer comes in time
    assert old.next_action(1.0 + FINISH_S) == Cancel((1,))
    new = Scheduler(rules(4, 0.0), 7.0, 2, random.Random(1), PAGE, guards=old.guards(7.0))
    assert run_until_wait(new, 7.0, taps[:1]) == ([], Wait(1.0 + FINISH_S + AMBIGUOUS_WAIT_S))
    assert run_until_wait(new, 1.0 + FINISH_S + AMBIGUOUS_WAIT_S, taps[:1])[0] == taps[:1]


def test_an_abandoned_request_is_guarded() -> None:
    tap = ModelTap(1, "A", 0, 0.0)
    old = scheduler(tap)
    run_until_wait(old, 0.0, [tap])
    assert old.abandon(2.0) == (1,)
    assert old.in_flight() == 0
    assert old.guards(2.0) == {1: 2.0 + AMBIGUOUS_WAIT_S}


def test_a_fresh_tap_goes_before_the_backlog() -> None:
    # Issue 14: with a backlog draining (after an outage), a tap recorded now waited for
    # the sweep to reach the end of the backlog: seconds, not milliseconds.
    backlog = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(1, 11)]
    sched = scheduler(*backlog, concurrency=1)
    assert run_until_wait(sched, 0.0, backlog)[0] == backlog[:1]
    fresh = ModelTap(11, "F", 0, 0.5)
    sched.recorded(11, fresh)
    assert run_until_wait(sched, 0.5, [*backlog, fresh])[0] == []  # the one slot is taken
    sched.finished(1, Delivered(), None, 1.0)
    sched.written([1])
    backlog[0].settled = True
    sent, _ = run_until_wait(sched, 1.0, [*backlog[1:], fresh])
    assert sent == [fresh]
    sched.finished(11, Delivered(), None, 1.5)
    sched.written([11])
    # The sweep goes on where it was, and does not send the fresh tap again.
    assert run_until_wait(sched, 1.5, backlog[1:])[0] == backlog[1:2]


def test_a_drain_leaves_a_slot_to_fresh_taps() -> None:
    # With several slots, a tap recorded now does not wait for one of the backlog's
    # requests to end (benchmarks/latency.py, the loaded case).
    backlog = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(1, 11)]
    sched = scheduler(*backlog, concurrency=4)
    assert run_until_wait(sched, 0.0, backlog)[0] == backlog[:3]
    fresh = ModelTap(11, "F", 0, 0.5)
    assert sched.recorded(11, fresh)
    assert run_until_wait(sched, 0.5, [*backlog, fresh])[0] == [fresh]
    assert sched.in_flight() == 4
    # With a flush interval every slot drains (nothing goes first there).
    sched = scheduler(*backlog, concurrency=4, interval=30.0)
    assert run_until_wait(sched, 0.0, backlog)[0] == backlog[:4]


def test_a_fresh_tap_of_a_card_with_a_pending_tap_keeps_its_place() -> None:
    backlog = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(1, 11)]
    sched = scheduler(*backlog, concurrency=1)
    run_until_wait(sched, 0.0, backlog)
    later = ModelTap(11, "C5", 0, 0.5)  # C5 still has its tap 5 pending
    sched.recorded(11, later)
    sched.finished(1, Delivered(), None, 1.0)
    sched.written([1])
    assert run_until_wait(sched, 1.0, [*backlog[1:], later])[0] == backlog[1:2]


def test_no_fresh_tap_goes_first_while_the_pending_cards_are_not_known() -> None:
    backlog = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(1, 11)]
    sched = scheduler(*backlog, concurrency=1)
    assert sched.next_action(0.0) == Count()
    sched.counted(None)  # the database could not be read
    run_until_wait(sched, 0.0, backlog)
    fresh = ModelTap(11, "F", 0, 0.5)
    sched.recorded(11, fresh)
    sched.finished(1, Delivered(), None, 1.0)
    sched.written([1])
    assert run_until_wait(sched, 1.0, [*backlog[1:], fresh])[0] == backlog[1:2]
    # A rescan (held taps released: their cards are not known) stops them going first.
    sched = scheduler(*backlog, concurrency=1)
    run_until_wait(sched, 0.0, backlog)
    sched.rescan()
    sched.recorded(11, fresh)
    sched.finished(1, Delivered(), None, 1.0)
    sched.written([1])
    assert sched.next_action(1.0) == Count()


def test_a_tap_recorded_before_the_count_is_judged_by_it() -> None:
    # The first taps after a start (with a backlog) come before the database is counted:
    # the count's oldest tap per card tells which of them may go first.
    backlog = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(1, 11)]
    sched = scheduler(*backlog, concurrency=1)
    fresh, behind = ModelTap(11, "F", 0, 0.0), ModelTap(12, "C3", 0, 0.0)
    sched.recorded(11, fresh)
    sched.recorded(12, behind)
    assert sched.next_action(0.0) == Count()
    sched.counted(oldest([*backlog, fresh, behind]))
    assert run_until_wait(sched, 0.0, [*backlog, fresh, behind])[0] == [fresh]
    sched.finished(11, Delivered(), None, 0.5)
    sched.written([11])
    fresh.settled = True
    # C3's new tap waits behind its tap 3: the sweep goes on in order.
    assert run_until_wait(sched, 0.5, [*backlog, behind])[0] == backlog[:1]


def test_a_sweep_ends_at_the_horizon_it_began_with() -> None:
    # Issue 14: under a stream of taps a sweep never reached a last page, so it went on
    # skipping the cards it had met (their next taps waited for it to end), and the sets
    # of cards it kept grew to every card of the school. It ends at the tap it began with
    # now; the taps recorded meanwhile are the next sweep's, from the oldest.
    backlog = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(1, 4)]  # one full page
    stream = [ModelTap(seq, f"C{seq % 3 + 1}", 0, 0.5) for seq in range(4, 10)]
    # The stream arrives while the sweep runs.
    sent, fetches = deliver_each(scheduler(*backlog, concurrency=1), backlog, {1: stream})
    assert sent == list(range(1, 10))
    assert fetches[:3] == [0, 3, 0]  # not on to 6: past its horizon (3)


def deliver_each(
    sched: Scheduler[ModelTap], backlog: list[ModelTap], arriving: dict[int, list[ModelTap]]
) -> tuple[list[int], list[int]]:
    """Act as the shell does with a server that delivers each tap at once; the taps of
    `arriving[seq]` are recorded while tap `seq`'s request runs. The seqs sent, and where
    each page was read from."""
    pending = list(backlog)
    sent: list[int] = []
    fetches: list[int] = []
    for _ in range(100):
        action = sched.next_action(1.0)
        if isinstance(action, Count):
            sched.counted(oldest(pending))
        elif isinstance(action, Fetch):
            fetches.append(action.after_seq)
            sched.fetched([tap for tap in pending if tap.seq > action.after_seq][:PAGE])
        elif isinstance(action, Send):
            sent.append(action.tap.seq)
            for tap in arriving.get(action.tap.seq, []):
                assert sched.recorded(tap.seq, tap)
                pending.append(tap)
            sched.finished(action.tap.seq, Delivered(), None, 1.0)
            sched.written([action.tap.seq])
            action.tap.settled = True
            pending.remove(action.tap)
        else:
            return sent, fetches
    pytest.fail("the scheduler never waits")


def test_a_card_whose_taps_a_sweep_delivered_goes_first_again() -> None:
    # A sweep that ends keeps the cards it leaves a pending tap of, not every card it
    # met: C1's tap was delivered, so its next one goes before the taps recorded meanwhile.
    backlog = [ModelTap(seq, f"C{seq}", 0, 0.0) for seq in range(1, 4)]
    behind = [ModelTap(4, "C2", 0, 0.5), ModelTap(5, "C3", 0, 0.5)]
    again = ModelTap(6, "C1", 0, 1.0)
    # C2 and C3 have a pending tap: theirs go behind them. C1 taps again while the next
    # sweep's first request runs.
    arriving = {1: behind, 4: [again]}
    sent, _ = deliver_each(scheduler(*backlog, concurrency=1), backlog, arriving)
    assert sent == [1, 2, 3, 4, 6, 5]


def test_a_card_a_sweep_left_retrying_does_not_go_first() -> None:
    # The other side of the test above: a tap the sweep sent and the server asked to
    # retry stays pending, so its card's next tap keeps its place behind it.
    taps = [ModelTap(1, "A", 0, 0.0), ModelTap(2, "B", 0, 0.0), ModelTap(3, "C", 0, 0.0)]
    sched = Scheduler(rules(2, 0.0), 0.0, len(taps), Top(), PAGE)
    assert run_until_wait(sched, 0.0, taps)[0] == taps[:1]  # one slot kept for fresh taps
    sched.finished(1, Retry("http-503", "", 503), None, 1.0)
    sched.written([1])
    taps[0].attempts = 1
    assert run_until_wait(sched, 100.0, taps)[0] == taps[1:2]  # the probe
    sched.finished(2, Delivered(), None, 100.0)  # the server is back: tap 1 is due
    sched.written([2])
    taps[1].settled = True
    pending = [taps[0], taps[2]]
    assert run_until_wait(sched, 100.0, pending)[0] == taps[2:3]  # the sweep's end
    later = ModelTap(4, "A", 0, 100.0)
    sched.recorded(4, later)
    # Not in the slot kept for fresh taps: it waits behind tap 1, which the next sweep
    # sends once tap 3's slot is free.
    assert run_until_wait(sched, 100.0, [*pending, later])[0] == []
    sched.finished(3, Delivered(), None, 100.0)
    sched.written([3])
    taps[2].settled = True
    assert run_until_wait(sched, 100.0, [taps[0], later])[0] == taps[:1]


def test_a_reload_to_0s_during_a_sweep_keeps_the_taps_past_its_horizon() -> None:
    # A sweep begun between flushes ends at the last flush's horizon: taps recorded
    # before it began may lie past it. A reload to `0s` while it runs must not let its end
    # forget their cards.
    a, b, c = ModelTap(1, "A", 0, 0.0), ModelTap(2, "B", 0, 0.0), ModelTap(3, "C", 0, 1.0)
    sched = scheduler(a, b, interval=30.0, concurrency=1)
    assert run_until_wait(sched, 0.0, [a, b])[0] == [a]
    sched.recorded(3, c)  # for the flush at 30 s
    sched.rescan()  # a sweep from the oldest, with the horizon still at tap 2
    assert run_until_wait(sched, 1.0, [a, b, c])[0] == []  # tap 1's request runs
    sched.reconfigure(rules(1, 0.0), 2.0, new_endpoint=False)
    assert run_until_wait(sched, 2.0, [a, b, c])[0] == []
    sched.finished(1, Delivered(), None, 3.0)
    sched.written([1])
    a.settled = True
    assert run_until_wait(sched, 3.0, [b, c])[0] == [b]  # and the sweep ends at tap 2
    behind = ModelTap(4, "C", 0, 4.0)
    sched.recorded(4, behind)
    sched.finished(2, Delivered(), None, 4.0)
    sched.written([2])
    b.settled = True
    assert run_until_wait(sched, 4.0, [c, behind])[0] == [c]


# -- what a card's fresh tap waits behind (issue 14: exact, so nothing else is kept) --
# The model test reaches these states seldom (a sweep stalled for a slot while taps
# arrive; it missed three of them in 1,000 examples): each one has an example.


def stalled(concurrency: int = 1) -> tuple[Scheduler[ModelTap], list[ModelTap]]:
    """A backlog of A and B; A's tap in flight, the sweep waiting on B's for a slot."""
    backlog = [ModelTap(1, "A", 0, 0.0), ModelTap(2, "B", 0, 0.0)]
    sched = scheduler(*backlog, concurrency=concurrency)
    assert run_until_wait(sched, 0.0, backlog)[0] == backlog[:1]
    return sched, backlog


def answer(sched: Scheduler[ModelTap], tap: ModelTap, outcome: Outcome, now: float) -> None:
    sched.finished(tap.seq, outcome, None, now)
    sched.written([tap.seq])
    tap.attempts += 1
    tap.settled = isinstance(outcome, Delivered | Rejected)


def test_a_fresh_tap_in_flight_keeps_its_cards_next_tap_behind_it() -> None:
    sched, (a, b) = stalled()
    x = ModelTap(3, "X", 0, 1.0)
    sched.recorded(3, x)
    answer(sched, a, Delivered(), 1.0)
    assert run_until_wait(sched, 1.0, [b, x])[0] == [x]  # before the backlog's B
    again = ModelTap(4, "X", 0, 2.0)
    sched.recorded(4, again)
    sched.finished(3, Delivered(), None, 2.0)
    # Not while tap 3's answer is unwritten: the sweep sends B's tap.
    assert run_until_wait(sched, 2.0, [b, x, again])[0] == [b]


def test_a_fresh_tap_answered_with_a_retry_keeps_its_cards_next_tap_behind_it() -> None:
    sched, (a, b) = stalled()
    x = ModelTap(3, "X", 0, 1.0)
    sched.recorded(3, x)
    answer(sched, a, Delivered(), 1.0)
    assert run_until_wait(sched, 1.0, [b, x])[0] == [x]
    answer(sched, x, Retry("http-503", "", 503), 2.0)
    again = ModelTap(4, "X", 0, 2.0)
    sched.recorded(4, again)
    # The probe, after the hold: B's tap, then tap 3, never tap 4 first.
    sent, _ = run_until_wait(sched, 100.0, [b, x, again])
    assert sent == [b]


def test_a_sweep_ends_keeping_the_card_of_a_backlog_tap_in_flight() -> None:
    a = ModelTap(1, "A", 0, 0.0)
    sched = scheduler(a, concurrency=2)
    assert run_until_wait(sched, 0.0, [a])[0] == [a]  # and the sweep ends
    later = ModelTap(2, "A", 0, 1.0)
    sched.recorded(2, later)
    assert run_until_wait(sched, 1.0, [a, later])[0] == []  # the free slot is not for it


def test_a_sweep_ends_keeping_the_card_of_an_answer_unwritten() -> None:
    sched, (a, b) = stalled()
    sched.finished(1, Delivered(), None, 1.0)  # not written yet
    assert run_until_wait(sched, 1.0, [a, b])[0] == [b]  # and the sweep ends
    later = ModelTap(3, "A", 0, 1.0)
    sched.recorded(3, later)
    sched.finished(2, Delivered(), None, 2.0)
    assert run_until_wait(sched, 2.0, [a, later])[0] == []


def test_a_sweep_ends_keeping_the_card_of_a_guarded_tap() -> None:
    sched, (a, b) = stalled()
    answer(sched, a, Retry("timeout", "no answer within 10s", ambiguous=True), 1.0)
    assert run_until_wait(sched, 9.5, [a, b])[0] == [b]  # the probe; tap 1 is guarded
    answer(sched, b, Delivered(), 10.0)
    assert run_until_wait(sched, 10.0, [a])[0] == []  # a sweep skips tap 1, and ends
    later = ModelTap(3, "A", 0, 11.0)
    sched.recorded(3, later)
    assert run_until_wait(sched, 11.0, [a, later])[0] == []
    assert run_until_wait(sched, 1.0 + AMBIGUOUS_WAIT_S, [a, later])[0] == [a]


def test_fresh_taps_beyond_a_page_go_with_the_next_sweep() -> None:
    # What waits to go first is bounded: in a burst (a stalled uplink, a scripted reader)
    # the taps beyond a page are sent by the sweep, in the order they were recorded.
    sched, (a, b) = stalled()
    burst = [ModelTap(seq, f"F{seq}", 0, 1.0) for seq in range(3, 3 + PAGE + 2)]
    for tap in burst:
        sched.recorded(tap.seq, tap)
    sent = []
    pending = [b, *burst]
    answer(sched, a, Delivered(), 1.0)
    for _ in range(len(pending)):
        (tap,), _ = run_until_wait(sched, 1.0, pending)
        sent.append(tap)
        answer(sched, tap, Delivered(), 1.0)
        pending.remove(tap)
    assert sent == [*burst[:PAGE], b, *burst[PAGE:]]
