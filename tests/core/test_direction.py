"""Direction: SPEC "Tap decisions", first tap of the local day in, later taps out."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateagent.core.direction import (
    CHECK_IN,
    CHECK_OUT,
    DIRECTIONS,
    TOO_SOON_AFTER_CHECK_IN,
    Decision,
    Direction,
    EarlierTap,
    decide,
)

JAKARTA = ZoneInfo("Asia/Jakarta")  # UTC+7, no DST
BERLIN = ZoneInfo("Europe/Berlin")  # CET/CEST
TEN_MINUTES_S = 600.0


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def tapped_in(text: str) -> EarlierTap:
    return EarlierTap(utc(text), CHECK_IN)


def test_decision_is_a_checktype_or_an_ignored_reason() -> None:
    assert Decision.check_in() == Decision(CHECK_IN, None)
    assert Decision.check_out() == Decision(CHECK_OUT, None)
    assert Decision.ignored("why") == Decision(None, "why")
    with pytest.raises(ValueError, match="checktype or an ignored reason"):
        Decision(None, None)
    with pytest.raises(ValueError, match="checktype or an ignored reason"):
        Decision(CHECK_IN, "why")


@pytest.mark.parametrize(
    ("direction", "checktype"), [("in", CHECK_IN), ("out", CHECK_OUT)], ids=["in", "out"]
)
def test_fixed_direction_readers_ignore_history(direction: Direction, checktype: int) -> None:
    at = utc("2024-01-15T01:00:00")
    histories = [[], [EarlierTap(at - timedelta(seconds=1), CHECK_IN)], [EarlierTap(at, None)]]
    for earlier in histories:
        assert decide(at, direction, earlier, JAKARTA, TEN_MINUTES_S) == Decision(checktype)


AUTO_CASES: list[tuple[str, str, list[EarlierTap], Decision]] = [
    ("first-tap-of-the-day", "2024-01-15T01:00:00", [], Decision.check_in()),
    (
        "too-soon-after-check-in",
        "2024-01-15T01:09:59",
        [tapped_in("2024-01-15T01:00:00")],
        Decision.ignored(TOO_SOON_AFTER_CHECK_IN),
    ),
    (
        "exactly-min-checkout-after",
        "2024-01-15T01:10:00",
        [tapped_in("2024-01-15T01:00:00")],
        Decision.check_out(),
    ),
    (
        "every-later-tap-is-a-check-out",
        "2024-01-15T10:00:00",
        [
            tapped_in("2024-01-15T01:00:00"),
            EarlierTap(utc("2024-01-15T09:00:00"), CHECK_OUT),
            EarlierTap(utc("2024-01-15T09:30:00"), CHECK_OUT),
        ],
        Decision.check_out(),
    ),
    (
        "ignored-taps-do-not-count",
        "2024-01-15T01:05:00",
        [EarlierTap(utc("2024-01-15T01:00:00"), None)],
        Decision.check_in(),
    ),
    (
        "a-check-out-alone-is-not-a-check-in",
        "2024-01-15T10:00:00",
        [EarlierTap(utc("2024-01-15T09:00:00"), CHECK_OUT)],
        Decision.check_in(),
    ),
    (
        "yesterday-does-not-count",
        "2024-01-15T01:00:00",
        [tapped_in("2024-01-14T01:00:00")],
        Decision.check_in(),
    ),
    (
        # A held tap decided after the clock synchronized must not see later taps.
        "later-taps-do-not-count",
        "2024-01-15T01:00:00",
        [tapped_in("2024-01-15T01:30:00")],
        Decision.check_in(),
    ),
    (
        "measured-from-the-first-check-in",
        "2024-01-15T01:25:00",
        [tapped_in("2024-01-15T01:20:00"), tapped_in("2024-01-15T01:00:00")],
        Decision.check_out(),
    ),
    # Asia/Jakarta is UTC+7: its day starts at 17:00 UTC.
    (
        "jakarta-new-day-at-local-midnight",
        "2024-01-15T17:01:00",
        [tapped_in("2024-01-15T16:59:00")],
        Decision.check_in(),
    ),
    (
        "jakarta-same-local-day-across-utc-dates",
        "2024-01-16T10:00:00",
        [tapped_in("2024-01-15T17:30:00")],
        Decision.check_out(),
    ),
    (
        "jakarta-new-local-day-on-the-same-utc-date",
        "2024-01-15T18:00:00",
        [tapped_in("2024-01-15T01:00:00")],
        Decision.check_in(),
    ),
]


@pytest.mark.parametrize(
    ("at", "earlier", "expected"),
    [case[1:] for case in AUTO_CASES],
    ids=[case[0] for case in AUTO_CASES],
)
def test_auto(at: str, earlier: list[EarlierTap], expected: Decision) -> None:
    assert decide(utc(at), "auto", earlier, JAKARTA, TEN_MINUTES_S) == expected


# Europe/Berlin: 2024-03-31 has 23 hours (02:00 CET -> 03:00 CEST at 01:00 UTC) and
# 2024-10-27 has 25 hours (03:00 CEST -> 02:00 CET at 01:00 UTC). Each case fails for
# a fixed offset of either side of the change.
BERLIN_CASES: list[tuple[str, str, str, Decision]] = [
    # 23:59 CET on the 30th, then 00:30 CET on the 31st.
    ("dst-start-midnight", "2024-03-30T22:59:00", "2024-03-30T23:30:00", Decision.check_in()),
    # 00:00 CET on the 31st, then 23:59 CEST the same day.
    ("dst-start-short-day", "2024-03-30T23:00:00", "2024-03-31T21:59:00", Decision.check_out()),
    # 00:00 CET on the 31st, then 00:30 CEST on April 1st.
    ("dst-start-next-day", "2024-03-30T23:00:00", "2024-03-31T22:30:00", Decision.check_in()),
    # 00:30 CEST on the 27th, then 23:30 CET the same (25-hour) day.
    ("dst-end-long-day", "2024-10-26T22:30:00", "2024-10-27T22:30:00", Decision.check_out()),
    # 23:30 CET on the 27th, then 00:30 CET on the 28th.
    ("dst-end-midnight", "2024-10-27T22:30:00", "2024-10-27T23:30:00", Decision.check_in()),
    # 02:30 CEST, then 02:30 CET an hour later: the same wall time, not the same instant.
    ("dst-end-repeated-hour", "2024-10-27T00:30:00", "2024-10-27T01:30:00", Decision.check_out()),
    (
        "dst-end-too-soon",
        "2024-10-27T00:55:00",
        "2024-10-27T01:01:00",
        Decision.ignored(TOO_SOON_AFTER_CHECK_IN),
    ),
]


@pytest.mark.parametrize(
    ("checked_in", "at", "expected"),
    [case[1:] for case in BERLIN_CASES],
    ids=[case[0] for case in BERLIN_CASES],
)
def test_auto_across_dst_changes(checked_in: str, at: str, expected: Decision) -> None:
    assert decide(utc(at), "auto", [tapped_in(checked_in)], BERLIN, TEN_MINUTES_S) == expected


def test_times_in_other_zones_are_the_same_instants() -> None:
    checked_in = EarlierTap(datetime(2024, 1, 16, 0, 30, tzinfo=JAKARTA), CHECK_IN)
    at = datetime(2024, 1, 16, 5, 0, tzinfo=ZoneInfo("Europe/London"))  # 12:00 in Jakarta
    assert decide(at, "auto", [checked_in], JAKARTA, TEN_MINUTES_S) == Decision.check_out()


def test_a_naive_time_is_refused() -> None:
    # A naive time would silently be read in the host's own time zone.
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(datetime(2024, 1, 15, 8, 0), "auto", [], JAKARTA, TEN_MINUTES_S)


# Reference model: taps in time order, one pass, a dict of each local day's first check-in.

BASES = [
    utc("2024-01-15T16:00:00"),  # an hour before midnight in Jakarta
    utc("2024-03-30T22:00:00"),  # Berlin, the night of the spring change
    utc("2024-10-26T21:00:00"),  # Berlin, the night of the autumn change
]
ZONES = [JAKARTA, BERLIN, ZoneInfo("UTC"), ZoneInfo("America/St_Johns")]  # UTC-3:30 / -2:30

gaps_s = st.one_of(st.integers(1, 900), st.integers(900, 8 * 3600))
taps = st.lists(st.tuples(gaps_s, st.sampled_from(DIRECTIONS)), max_size=25)


def reference(
    timeline: list[tuple[datetime, Direction]], tz: ZoneInfo, min_checkout_after_s: float
) -> list[Decision]:
    first_check_in: dict[date, datetime] = {}
    decisions = []
    for at, direction in timeline:
        day = at.astimezone(tz).date()
        if direction == "in" or (direction == "auto" and day not in first_check_in):
            first_check_in.setdefault(day, at)
            decisions.append(Decision.check_in())
        elif direction == "out":
            decisions.append(Decision.check_out())
        elif at - first_check_in[day] < timedelta(seconds=min_checkout_after_s):
            decisions.append(Decision.ignored(TOO_SOON_AFTER_CHECK_IN))
        else:
            decisions.append(Decision.check_out())
    return decisions


@given(
    base=st.sampled_from(BASES),
    tz=st.sampled_from(ZONES),
    min_checkout_after_s=st.sampled_from([0.0, TEN_MINUTES_S, 3600.0]),
    steps=taps,
)
def test_auto_matches_the_reference(
    base: datetime,
    tz: ZoneInfo,
    min_checkout_after_s: float,
    steps: list[tuple[int, Direction]],
) -> None:
    timeline = []
    at = base
    for gap_s, direction in steps:
        at += timedelta(seconds=gap_s)
        timeline.append((at, direction))
    expected = reference(timeline, tz, min_checkout_after_s)

    recorded: list[EarlierTap] = []
    for (at, direction), want in zip(timeline, expected, strict=True):
        got = decide(at, direction, recorded, tz, min_checkout_after_s)
        assert got == want
        recorded.append(EarlierTap(at, got.checktype))

    # Deciding again with every other tap known, later ones and in any order (as after a
    # restart or a clock correction), changes nothing.
    for i, (at, direction) in enumerate(timeline):
        others = recorded[:i] + recorded[i + 1 :]
        assert decide(at, direction, others[::-1], tz, min_checkout_after_s) == expected[i]
