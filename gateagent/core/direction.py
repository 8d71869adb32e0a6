"""Direction: is a tap a check-in, a check-out, or ignored?

SPEC "Tap decisions". With `direction = "auto"` the first tap of a card in the local day
(in `device.timezone`) is a check-in; a tap sooner than `min_checkout_after` after that
check-in is ignored; every later tap is a check-out, each one sent, because the server
keeps the latest. `"in"` / `"out"` readers always give 1 / 2.

The decision is made from the card's earlier taps as the store holds them, not from
memory, so it survives restarts (SPEC: "made from the database").
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

Direction = Literal["auto", "in", "out"]
DIRECTIONS: Final[tuple[Direction, ...]] = ("auto", "in", "out")

CHECK_IN: Final = 1  # `checktype` of the integration API
CHECK_OUT: Final = 2
TOO_SOON_AFTER_CHECK_IN: Final = "too-soon-after-check-in"


class EarlierTap(NamedTuple):
    """A recorded tap of the same card: its time (aware) and its checktype, None if ignored.

    A named tuple (immutable, as a frozen dataclass, and cheaper to make: one per tap)."""

    at: datetime
    checktype: int | None


@dataclass(frozen=True)
class Decision:
    """Exactly one of `checktype` (a tap to send) and `ignored_reason` (kept, never sent)."""

    checktype: int | None
    ignored_reason: str | None = None

    def __post_init__(self) -> None:
        if (self.checktype is None) == (self.ignored_reason is None):
            raise ValueError(f"a decision is a checktype or an ignored reason: {self!r}")

    # Values, so the two that nearly every tap ends in are made once: a frozen
    # dataclass and its check cost a third of decide() (issue 14).
    @classmethod
    def check_in(cls) -> "Decision":
        return _CHECK_IN

    @classmethod
    def check_out(cls) -> "Decision":
        return _CHECK_OUT

    @classmethod
    def ignored(cls, reason: str) -> "Decision":
        return cls(None, reason)


_CHECK_IN: Final = Decision(CHECK_IN)
_CHECK_OUT: Final = Decision(CHECK_OUT)


def decide(
    at: datetime,
    direction: Direction,
    earlier: Sequence[EarlierTap],
    tz: ZoneInfo,
    min_checkout_after_s: float,
) -> Decision:
    """Decide the tap of a card at `at`, given that card's `earlier` taps."""
    if direction == "in":
        return Decision.check_in()
    if direction == "out":
        return Decision.check_out()

    day = _local_day(at, tz)
    # Taps "after" this one exist when held taps are decided once the clock is known;
    # they must not change the decision of a tap that happened before them.
    check_ins = [
        tap.at
        for tap in earlier
        if tap.checktype == CHECK_IN and tap.at <= at and _local_day(tap.at, tz) == day
    ]
    if not check_ins:
        return Decision.check_in()
    if (at - min(check_ins)).total_seconds() < min_checkout_after_s:
        return Decision.ignored(TOO_SOON_AFTER_CHECK_IN)
    return Decision.check_out()


def _local_day(at: datetime, tz: ZoneInfo) -> date:
    # A naive time would be read as the host's local time: a hidden clock setting.
    if at.utcoffset() is None:
        raise ValueError(f"tap time must be timezone-aware: {at!r}")
    return at.astimezone(tz).date()
