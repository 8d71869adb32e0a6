"""Feedback decisions: issue 15's outcomes, their patterns, and when a verdict counts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateagent.core.answers import Delivered, Outcome, Paused, Rejected, Retry
from gateagent.core.direction import TOO_SOON_AFTER_CHECK_IN
from gateagent.core.feedback import (
    PATTERNS,
    TEST_PATTERN,
    Light,
    Signal,
    Unreadables,
    Verdicts,
    at,
    counts,
    duration_s,
    for_answer,
    for_tap,
)


@pytest.mark.parametrize(
    ("state", "reason", "signal"),
    [
        ("pending", None, Signal.RECORDED),
        ("held", None, Signal.RECORDED),  # committed; sent once the clock synchronizes
        ("ignored", TOO_SOON_AFTER_CHECK_IN, Signal.TOO_SOON),
        ("ignored", "some-other-rule", Signal.RECORDED),
    ],
    ids=["pending", "held", "too-soon", "ignored-other"],
)
def test_signal_of_a_recorded_tap(state: str, reason: str | None, signal: Signal) -> None:
    assert for_tap(state, reason) is signal


@pytest.mark.parametrize(
    ("outcome", "signal"),
    [
        (Delivered("Budi", "PRESENT"), Signal.ACCEPTED),
        (Delivered("Budi", "LATE"), Signal.LATE),
        (Delivered("Budi", "late "), Signal.LATE),
        (Delivered(), Signal.ACCEPTED),  # absensi and webhook servers say no status
        (Delivered(duplicate=True), Signal.ACCEPTED),
        (Rejected("unknown-card", 404, "No student found"), Signal.UNKNOWN_CARD),
        (Rejected("future-date", 400, "Cannot add attendance for tomorrow"), None),
        (Rejected("http-422", 422, "invalid"), None),
        (Retry("timeout", "timed out"), None),
        (Paused("paused-auth", 400, "Invalid authentication token"), None),
    ],
    ids=[
        "present",
        "late",
        "late-lowercase",
        "no-status",
        "duplicate",
        "unknown-card",
        "future-date",
        "other-refusal",
        "retry",
        "paused",
    ],
)
def test_verdict_of_an_answer(outcome: Outcome, signal: Signal | None) -> None:
    assert for_answer(outcome) is signal


def test_every_signal_has_a_pattern_that_ends() -> None:
    assert set(PATTERNS) == set(Signal)
    for steps in [*PATTERNS.values(), TEST_PATTERN]:
        assert steps and all(step.seconds > 0 for step in steps)
        assert at(steps, duration_s(steps)) == (False, Light.OFF)


def _beeps(signal: Signal) -> list[float]:
    return [step.seconds for step in PATTERNS[signal] if step.beep]


def test_patterns_are_told_apart_by_ear() -> None:
    # The signals of our own decisions differ in their beeps alone (a person looks at
    # the card, not the light); accepted adds no beep to the recorded one.
    assert _beeps(Signal.RECORDED) == [0.1]
    assert _beeps(Signal.TOO_SOON) == [0.1, 0.1]
    assert len(_beeps(Signal.UNREADABLE)) == 3
    assert _beeps(Signal.UNKNOWN_CARD) == [0.8]
    assert _beeps(Signal.ACCEPTED) == _beeps(Signal.LATE) == []


def test_lights_of_the_outcomes() -> None:
    assert at(PATTERNS[Signal.RECORDED], 0.05) == (True, Light.GREEN)
    assert at(PATTERNS[Signal.RECORDED], 0.5) == (False, Light.GREEN)
    assert at(PATTERNS[Signal.TOO_SOON], 0.15) == (False, Light.AMBER)
    assert at(PATTERNS[Signal.UNKNOWN_CARD], 1.0) == (False, Light.RED)
    assert at(PATTERNS[Signal.RECORDED], -0.1) == (False, Light.OFF)
    assert Light.AMBER.green and Light.AMBER.red and not Light.GREEN.red


@pytest.mark.parametrize(
    ("recorded", "answered", "within", "expected"),
    [
        (10.0, 10.3, 2.0, True),
        (10.0, 12.0, 2.0, True),  # the edge counts
        (10.0, 12.01, 2.0, False),
        (10.0, 9.9, 2.0, False),  # an answer before the signal is not this tap's
        (10.0, 10.0, 0.0, False),  # verdict_within = 0: verdicts off
    ],
    ids=["in-time", "edge", "too-late", "before", "off"],
)
def test_counts(recorded: float, answered: float, within: float, expected: bool) -> None:
    assert counts(recorded, answered, within) is expected


def test_a_verdict_is_taken_once() -> None:
    verdicts = Verdicts(2.0)
    verdicts.expect("a", 100.0)
    assert verdicts.take("a", 100.5) is True
    assert verdicts.take("a", 100.6) is False  # a second answer (a requeue) is no verdict


def test_a_tap_never_signalled_recorded_has_no_verdict() -> None:
    # e.g. a tap recorded before a restart, or a held tap released and sent later
    assert Verdicts(2.0).take("never", 5.0) is False


def test_late_answers_are_forgotten() -> None:
    verdicts = Verdicts(2.0)
    for number in range(1000):
        verdicts.expect(str(number), number * 0.01)
    verdicts.expect("last", 100.0)
    assert len(verdicts) == 1
    assert verdicts.take("0", 100.0) is False


@given(st.floats(0, 1e6), st.floats(0, 100), st.floats(0, 100))
def test_counts_matches_the_window(recorded: float, delay: float, within: float) -> None:
    answered = recorded + delay
    # the model on the delay as the floats make it
    assert counts(recorded, answered, within) is (within > 0 and answered - recorded <= within)


class VerdictsModel(RuleBasedStateMachine):
    """`Verdicts` against a plain dict of every expectation ever made."""

    def __init__(self) -> None:
        super().__init__()
        self.verdicts = Verdicts(2.0)
        self.expected: dict[str, float] = {}
        self.now = 0.0

    @rule(seconds=st.floats(0, 3))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule(tap=st.sampled_from("abcde"))
    def expect(self, tap: str) -> None:
        if tap not in self.expected:  # a tap is signalled recorded once
            self.verdicts.expect(tap, self.now)
            self.expected[tap] = self.now

    @rule(tap=st.sampled_from("abcde"))
    def take(self, tap: str) -> None:
        since = self.expected.pop(tap, None)
        model = since is not None and self.now - since <= 2.0
        assert self.verdicts.take(tap, self.now) is model

    @invariant()
    def small(self) -> None:
        assert len(self.verdicts) <= len(self.expected)


TestVerdictsModel = VerdictsModel.TestCase


# -- unreadable reads: one signal per burst -------------------------------------------


@pytest.mark.parametrize(
    ("times", "signalled"),
    [
        ([0.0], [True]),
        ([0.0, 1.0], [True, True]),  # a second apart: a bad card presented again
        ([0.0, 0.3, 0.6, 0.9, 1.2], [True, False, False, False, False]),  # a held card
        ([0.0, 0.5, 1.6], [True, False, True]),  # quiet for a second, then a new one
        ([5.0, 4.0], [True, True]),  # a clock that went back is never a reason to mute
    ],
    ids=["first", "again-after-1s", "held-card", "after-quiet", "clock-back"],
)
def test_unreadables_signal_once_per_burst(times: list[float], signalled: list[bool]) -> None:
    unreadables = Unreadables(1.0)
    assert [unreadables.signal("desk", t) for t in times] == signalled


def test_unreadables_are_counted_per_reader() -> None:
    unreadables = Unreadables(1.0)
    assert unreadables.signal("entrance", 0.0)
    assert unreadables.signal("exit", 0.1)  # another reader, another person
    assert not unreadables.signal("entrance", 0.2)


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=60).map(sorted))
def test_unreadable_signals_are_at_least_quiet_s_apart(times: list[float]) -> None:
    unreadables = Unreadables(1.0)
    signalled = [t for t in times if unreadables.signal("desk", t)]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(signalled))
    assert signalled[:1] == times[:1]  # the first unreadable read is always heard
