"""Keyboard-wedge decoder fed with real evdev InputEvents (SPEC "Readers", `hid`)."""

from __future__ import annotations

import re

import pytest
from evdev import InputEvent, ecodes
from hypothesis import given
from hypothesis import strategies as st

from gateagent.core import keys
from gateagent.core.frames import Frame, Garbage
from gateagent.core.keys import MAX_KEYS, KeyDecoder

DOWN, UP, REPEAT = 1, 0, 2
STEP_US = 8_000  # a fast wedge types a key every few milliseconds
START_US = 1_700_000_000_000_000

KEYCODES = {
    **{str(d): getattr(ecodes, f"KEY_{d}") for d in range(10)},
    **{c: getattr(ecodes, f"KEY_{c.upper()}") for c in "abcdefghijklmnopqrstuvwxyz"},
    "\n": ecodes.KEY_ENTER,
    "-": ecodes.KEY_MINUS,
}
KEYPAD = {str(d): getattr(ecodes, f"KEY_KP{d}") for d in range(10)} | {"\n": ecodes.KEY_KPENTER}


def event(at_us: int, code: int, value: int, ev_type: int = ecodes.EV_KEY) -> InputEvent:
    return InputEvent(at_us // 1_000_000, at_us % 1_000_000, ev_type, code, value)


def typed(text: str, *, at_us: int = START_US, keypad: bool = False) -> list[InputEvent]:
    """What a wedge sends for `text`: Shift around capitals, a SYN after each event."""
    events: list[InputEvent] = []
    for char in text:
        code = (KEYPAD if keypad else KEYCODES).get(char) or KEYCODES[char.lower()]
        presses = [code]
        if char.isupper():
            presses = [ecodes.KEY_LEFTSHIFT, code]
        for value in (DOWN, UP):
            for key in presses if value == DOWN else presses[::-1]:
                events += [
                    event(at_us, key, value),
                    event(at_us, ecodes.SYN_REPORT, 0, ecodes.EV_SYN),
                ]
        at_us += STEP_US
    return events


def run(decoder: KeyDecoder, events: list[InputEvent]) -> list[Frame | Garbage]:
    """The reader loop's part: EV_KEY events only, as (code, value, timestamp)."""
    out = []
    for ev in events:
        if ev.type == ecodes.EV_KEY:
            result = decoder.feed(ev.code, ev.value, ev.timestamp())
            if result is not None:
                out.append(result)
    return out


def test_keycodes_match_evdev() -> None:
    names = [name for name in vars(keys) if name.startswith("KEY_")]
    assert len(names) == 30  # 10 digits, A-F, 10 keypad digits, 2 Enters, 2 Shifts
    for name in names:
        assert getattr(keys, name) == getattr(ecodes, name), name


CASES = [
    ("digits", typed("0012822001\n"), [Frame("0012822001")]),
    ("keypad-digits", typed("0123456789\n", keypad=True), [Frame("0123456789")]),
    ("hex-with-shift", typed("0A00C3A5F1\n"), [Frame("0A00C3A5F1")]),
    ("hex-lower-case", typed("0a00c3a5f1\n"), [Frame("0A00C3A5F1")]),
    (
        "keypad-enter",
        typed("0A00C3A5F1") + typed("\n", at_us=START_US + 10 * STEP_US, keypad=True),
        [Frame("0A00C3A5F1")],
    ),
    ("two-cards", typed("12\n34\n"), [Frame("12"), Frame("34")]),
    ("enter-alone", typed("\n\n"), []),
    ("bad-letter", typed("12G4\n"), [Garbage(b"12<34>4", "bad-key")]),
    ("bad-punctuation", typed("12-4\n56\n"), [Garbage(b"12<12>4", "bad-key"), Frame("56")]),
    ("longest", typed("7" * MAX_KEYS + "\n"), [Frame("7" * MAX_KEYS)]),
    ("too-long", typed("7" * 100 + "\n"), [Garbage(b"7" * MAX_KEYS, "too-long")]),
]


@pytest.mark.parametrize(("events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cards(events: list[InputEvent], expected: list[Frame | Garbage]) -> None:
    assert run(KeyDecoder(), events) == expected


def test_key_up_and_autorepeat_are_ignored() -> None:
    events = typed("12")
    # A held key autorepeats (value 2); a stray release arrives without its press.
    events.insert(1, event(START_US + 1, ecodes.KEY_1, REPEAT))
    events += [event(START_US + 20_000, ecodes.KEY_9, UP), *typed("3\n", at_us=START_US + 30_000)]
    assert run(KeyDecoder(), events) == [Frame("123")]


@pytest.mark.parametrize(("gap_ms", "expected"), [
    (150, [Frame("123456")]),
    (250, [Garbage(b"123", "timeout"), Frame("456")]),
], ids=["within-gap", "after-gap"])  # fmt: skip
def test_gap_drops_partial_read(gap_ms: int, expected: list[Frame | Garbage]) -> None:
    later_us = START_US + 3 * STEP_US + gap_ms * 1000
    assert run(KeyDecoder(), typed("123") + typed("456\n", at_us=later_us)) == expected


def test_enter_after_gap_reports_the_dropped_read_only() -> None:
    events = typed("123") + typed("\n", at_us=START_US + 500_000)
    assert run(KeyDecoder(), events) == [Garbage(b"123", "timeout")]


def test_expire() -> None:
    decoder = KeyDecoder(gap_s=0.2)
    assert decoder.expire(0.0) is None
    run(decoder, typed("123"))
    last_s = (START_US + 2 * STEP_US) / 1e6
    assert decoder.expire(last_s + 0.1) is None
    assert decoder.expire(last_s + 0.3) == Garbage(b"123", "timeout")
    assert decoder.expire(last_s + 0.4) is None
    assert run(decoder, typed("\n", at_us=START_US + 400_000)) == []


HEX_CARDS = st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=MAX_KEYS)


@given(cards=st.lists(HEX_CARDS, max_size=5), keypad=st.booleans())
def test_typed_cards_come_back(cards: list[str], keypad: bool) -> None:
    text = "".join(card + "\n" for card in cards)
    assert run(KeyDecoder(), typed(text, keypad=keypad)) == [Frame(card) for card in cards]


RELEVANT = [*KEYCODES.values(), *KEYPAD.values(), ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT]
raw_events = st.tuples(
    st.one_of(st.sampled_from(RELEVANT), st.integers(0, ecodes.KEY_MAX)),
    st.sampled_from([DOWN, UP, REPEAT]),
    st.integers(0, 400_000),  # microseconds since the previous event
    st.booleans(),  # the reader loop's read timed out first
)


@given(st.lists(raw_events, max_size=200))
def test_random_events_never_raise(script: list[tuple[int, int, int, bool]]) -> None:
    decoder = KeyDecoder()
    at_us = START_US
    out: list[Frame | Garbage | None] = []
    for code, value, delta_us, timed_out in script:
        at_us += delta_us
        if timed_out:
            out.append(decoder.expire(at_us / 1e6))
        out += run(decoder, [event(at_us, code, value)])
    for item in out:
        assert item is None or isinstance(item, Frame | Garbage)
        if isinstance(item, Frame):
            assert re.fullmatch(r"[0-9A-F]{1,64}", item.raw)


def test_a_read_with_lost_events_is_garbage_until_it_ends() -> None:
    decoder = KeyDecoder(gap_s=0.2)
    start = START_US / 1e6
    assert decoder.lost(start) is None  # SYN_DROPPED: the card's first keys are gone
    assert run(decoder, typed("2001\n", at_us=START_US + 1000)) == [
        Garbage(b"2001", "events-dropped")
    ]
    assert run(decoder, typed("42\n", at_us=START_US + 100_000)) == [Frame("42")]


def test_lost_events_with_no_key_after_them_end_with_the_gap() -> None:
    decoder = KeyDecoder(gap_s=0.2)
    start = START_US / 1e6
    assert decoder.lost(start) is None
    assert decoder.expire(start + 0.1) is None
    assert decoder.expire(start + 0.3) == Garbage(b"", "events-dropped")
    assert decoder.expire(start + 0.6) is None  # told once
