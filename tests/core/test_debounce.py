"""Debounce: SPEC "Tap decisions", a card read again within the window is the same tap."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateagent.core.debounce import Debouncer

CARD = "0012822001"
OTHER = "0006762840"


def test_first_read_is_a_tap_and_a_quick_second_read_is_not() -> None:
    debouncer = Debouncer(3.0)
    assert debouncer.seen(CARD, 100.0) is False
    assert debouncer.seen(CARD, 101.0) is True


def test_a_read_after_the_window_is_a_new_tap() -> None:
    debouncer = Debouncer(3.0)
    debouncer.seen(CARD, 100.0)
    assert debouncer.seen(CARD, 103.5) is False


def test_a_read_exactly_one_window_later_is_a_new_tap() -> None:
    debouncer = Debouncer(3.0)
    debouncer.seen(CARD, 100.0)
    assert debouncer.seen(CARD, 103.0) is False


def test_a_card_held_on_a_reader_stays_one_tap_forever() -> None:
    # An RDM6300 repeats its frame about every 100 ms while the card is in the field.
    debouncer = Debouncer(0.5)
    reads = [debouncer.seen(CARD, 10.0 + i * 0.1) for i in range(6000)]
    assert reads == [False] + [True] * 5999


def test_cards_are_debounced_each_on_its_own() -> None:
    debouncer = Debouncer(3.0)
    assert debouncer.seen(CARD, 1.0) is False
    assert debouncer.seen(OTHER, 1.5) is False
    assert debouncer.seen(CARD, 2.0) is True
    assert debouncer.seen(OTHER, 2.5) is True


def test_a_window_of_zero_turns_debouncing_off() -> None:
    debouncer = Debouncer(0.0)
    assert [debouncer.seen(CARD, 5.0) for _ in range(3)] == [False, False, False]
    assert len(debouncer) == 1


def test_set_window_applies_to_the_next_read() -> None:
    debouncer = Debouncer(3.0)
    debouncer.seen(CARD, 0.0)
    debouncer.set_window(10.0)
    assert debouncer.window_s == 10.0
    assert debouncer.seen(CARD, 8.0) is True
    debouncer.set_window(1.0)
    assert debouncer.seen(CARD, 9.5) is False


@pytest.mark.parametrize("window_s", [-1.0, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_a_window_that_is_not_a_duration_is_refused(window_s: float) -> None:
    with pytest.raises(ValueError, match="debounce window"):
        Debouncer(window_s)
    with pytest.raises(ValueError, match="debounce window"):
        Debouncer(3.0).set_window(window_s)


def test_memory_holds_only_cards_read_within_the_window() -> None:
    debouncer = Debouncer(3.0)
    for i in range(100_000):
        debouncer.seen(f"{i:010d}", i * 0.5)
        assert len(debouncer) <= 6
    assert f"{99_999:010d}" in debouncer
    assert f"{0:010d}" not in debouncer


def test_a_clock_going_backwards_never_suppresses_a_tap() -> None:
    debouncer = Debouncer(3.0)
    debouncer.seen(CARD, 1000.0)
    debouncer.seen(OTHER, 1000.5)
    assert debouncer.seen(CARD, 5.0) is False
    assert debouncer.seen(CARD, 6.0) is True  # debouncing goes on from the new time
    # The card read "in the future" was forgotten, so it cannot come back to life.
    assert OTHER not in debouncer
    assert debouncer.seen(OTHER, 1001.0) is False


@given(times=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30))
def test_any_time_values_never_crash(times: list[float]) -> None:
    debouncer = Debouncer(3.0)
    for now in times:
        debouncer.seen(CARD, now)
        debouncer.seen(OTHER, now)
        assert len(debouncer) <= 2


CARDS = st.sampled_from([CARD, OTHER, "195,42481", "C552D790"])
WINDOWS = st.sampled_from([0.0, 0.1, 0.5, 3.0])


class DebouncerMachine(RuleBasedStateMachine):
    """A Debouncer against a reference that scans every remembered read on every read.

    The reference forgets reads as they leave the window, like the Debouncer must: a
    reload that widens the window cannot bring back a read that was already forgotten.
    """

    @initialize(window_s=WINDOWS)
    def start(self, window_s: float) -> None:
        self.debouncer = Debouncer(window_s)
        self.window_s = window_s
        self.now = 0.0
        self.last_read: dict[str, float] = {}

    def live(self, last: float) -> bool:
        return 0 <= self.now - last < self.window_s

    @rule(card=CARDS, elapsed=st.floats(min_value=0.0, max_value=1.0))
    def read(self, card: str, elapsed: float) -> None:
        self.now += elapsed
        self.check_read(card)

    @rule(card=CARDS, back=st.floats(min_value=0.001, max_value=5.0))
    def read_after_clock_went_back(self, card: str, back: float) -> None:
        self.now -= back
        self.check_read(card)

    @rule(window_s=WINDOWS)
    def reload(self, window_s: float) -> None:
        self.debouncer.set_window(window_s)
        self.window_s = window_s

    def check_read(self, card: str) -> None:
        expected = card in self.last_read and self.live(self.last_read[card])
        assert self.debouncer.seen(card, self.now) is expected
        self.last_read[card] = self.now
        # What must be remembered after a read: the card just read, and any read
        # within the window; anything else is memory that should have been freed.
        self.last_read = {c: t for c, t in self.last_read.items() if c == card or self.live(t)}
        assert all(c in self.debouncer for c in self.last_read)
        assert len(self.debouncer) == len(self.last_read)

    @invariant()
    def never_more_than_the_cards(self) -> None:
        assert len(self.debouncer) <= 4


DebouncerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60)
test_debouncer_matches_reference = DebouncerMachine.TestCase
