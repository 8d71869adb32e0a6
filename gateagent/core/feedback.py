"""What the person at the gate is told, and when (SPEC "Feedback and monitoring", issue 15).

Pure: the signals a person can tell apart, the pattern each one plays (beeps and
lights over time, as data), which tap or answer gives which signal, and whether a
server's verdict still counts. `gateagent.feedback` plays the patterns on real outputs.

A signal comes first from our own decisions, so a gate gives it offline too: a tap is
`recorded` once committed (SPEC "Data flow": never before), `too-soon` when the
direction rule ignored it (`min_checkout_after`), `unreadable` when the read was not a
card number. A server's answer adds `accepted` / `late` / `unknown-card` only while the
person is still there: within `[feedback] verdict_within` of the recorded signal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateagent.core.answers import Delivered, Outcome, Rejected
from gateagent.core.direction import TOO_SOON_AFTER_CHECK_IN


class Signal(enum.Enum):
    RECORDED = "recorded"
    TOO_SOON = "too-soon"
    UNREADABLE = "unreadable"
    ACCEPTED = "accepted"
    LATE = "late"  # accepted, and the server says attendanceStatus LATE
    UNKNOWN_CARD = "unknown-card"


class Light(enum.Enum):
    OFF = "off"
    GREEN = "green"
    RED = "red"
    AMBER = "amber"  # both LEDs (or red + green of an RGB LED)

    @property
    def green(self) -> bool:
        return self in (Light.GREEN, Light.AMBER)

    @property
    def red(self) -> bool:
        return self in (Light.RED, Light.AMBER)


@dataclass(frozen=True)
class Step:
    """One stretch of a pattern: the buzzer on or off and the light, for `seconds`."""

    seconds: float
    beep: bool
    light: Light


def _steps(*steps: tuple[float, bool, Light]) -> tuple[Step, ...]:
    return tuple(Step(seconds, beep, light) for seconds, beep, light in steps)


G, R, A, OFF = Light.GREEN, Light.RED, Light.AMBER, Light.OFF

# Beeps short enough not to overlap the next student's tap (a gate takes about one tap
# a second at the morning peak), lights long enough to be seen from a step away. A
# pattern ends with everything off. Told apart by ear alone: one beep (recorded), two
# (too soon), three quick (unreadable), one long (unknown card); a verdict that agrees
# with the recorded signal adds no beep, only its light.
PATTERNS: dict[Signal, tuple[Step, ...]] = {
    Signal.RECORDED: _steps((0.1, True, G), (0.9, False, G)),
    Signal.TOO_SOON: _steps((0.1, True, A), (0.1, False, A), (0.1, True, A), (0.7, False, A)),
    Signal.UNREADABLE: _steps(
        (0.05, True, R), (0.05, False, OFF), (0.05, True, R), (0.05, False, OFF), (0.05, True, R)
    ),
    Signal.ACCEPTED: _steps((1.5, False, G)),
    Signal.LATE: _steps(*[(0.25, False, light) for light in (G, A, G, A, G, A)]),
    Signal.UNKNOWN_CARD: _steps((0.8, True, R), (1.2, False, R)),
}
# `gateagent check`: a short beep and a blink of each light.
TEST_PATTERN = _steps((0.1, True, G), (0.2, False, G), (0.2, False, R), (0.1, False, OFF))


def duration_s(steps: tuple[Step, ...]) -> float:
    return sum(step.seconds for step in steps)


def at(steps: tuple[Step, ...], elapsed_s: float) -> tuple[bool, Light]:
    """The buzzer and the light `elapsed_s` into a pattern (off before and after it)."""
    if elapsed_s < 0:
        return False, OFF
    for step in steps:
        if elapsed_s < step.seconds:
            return step.beep, step.light
        elapsed_s -= step.seconds
    return False, OFF


def for_tap(state: str, reason: str | None) -> Signal:
    """The signal of a tap just committed (`Recorder`'s recorded tap)."""
    if state == "ignored" and reason == TOO_SOON_AFTER_CHECK_IN:
        return Signal.TOO_SOON
    # pending (to send) and held (to send once the clock synchronizes) are recorded;
    # an ignored tap of any other reason is recorded too, and never sent.
    return Signal.RECORDED


def for_answer(outcome: Outcome) -> Signal | None:
    """The verdict in a server's answer, or None when it is not one (retry, pause,
    a refusal that is not about the card): the recorded signal stands."""
    if isinstance(outcome, Delivered):
        # A duplicate (e.g. 409 "already checked in") means the server has the tap.
        if (outcome.attendance_status or "").strip().upper() == "LATE":
            return Signal.LATE
        return Signal.ACCEPTED
    if isinstance(outcome, Rejected) and outcome.reason == "unknown-card":
        return Signal.UNKNOWN_CARD
    return None


class Verdicts:
    """The taps whose verdict is still awaited at the gate.

    `expect(tap_id, now)` at the recorded signal; `take(tap_id, now)` when the server
    answers: True when the answer came within `within_s` of it. A tap is taken once: a
    later answer for it (a retry, a requeue) is not a verdict any more. Taps not
    answered in time are forgotten, so this stays as small as one window's taps.
    """

    def __init__(self, within_s: float) -> None:
        self.within_s = within_s
        self._since: dict[str, float] = {}

    def expect(self, tap_id: str, now_s: float) -> None:
        self._forget(now_s)
        if self.within_s > 0:
            self._since[tap_id] = now_s

    def take(self, tap_id: str, now_s: float) -> bool:
        self._forget(now_s)
        since = self._since.pop(tap_id, None)
        return since is not None and counts(since, now_s, self.within_s)

    def __len__(self) -> int:
        return len(self._since)

    def _forget(self, now_s: float) -> None:
        # Insertion order is the order of the recorded signals (a monotonic clock).
        while self._since:
            tap_id, since = next(iter(self._since.items()))
            if counts(since, now_s, self.within_s):
                return
            del self._since[tap_id]


def counts(recorded_s: float, answered_s: float, within_s: float) -> bool:
    """Does a verdict answered at `answered_s` still count for a tap signalled recorded
    at `recorded_s` (the same monotonic clock)? `within_s` 0 turns verdicts off."""
    return within_s > 0 and 0 <= answered_s - recorded_s <= within_s


# A reader's unreadable reads closer together than this are one burst, and a burst is
# signalled once, at its start. A card held on the reader repeats its frame every few
# hundred ms (RDM6300 datasheet), and a reader set to the wrong protocol or baud rate
# sends garbage without end: either would otherwise beep three times a second for as
# long as it lasts. A person who presents a bad card again after a second hears it again.
UNREADABLE_QUIET_S = 1.0


class Unreadables:
    """Which unreadable reads are signalled: at most one per reader per burst.

    `signal(reader, now_s)` for every unreadable read, on a monotonic clock: True when
    the reader's previous unreadable read, signalled or not, is at least `quiet_s` ago.
    So a reader's unreadable signals are at least `quiet_s` apart, and a stream of noise
    is one signal until the line is quiet for `quiet_s`.
    """

    def __init__(self, quiet_s: float = UNREADABLE_QUIET_S) -> None:
        self.quiet_s = quiet_s
        self._last: dict[str, float] = {}

    def signal(self, reader: str, now_s: float) -> bool:
        last = self._last.get(reader)
        self._last[reader] = now_s
        return last is None or not 0 <= now_s - last < self.quiet_s
