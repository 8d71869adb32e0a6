from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateagent.core.backoff import RETRY_AFTER_MAX_S, Backoff, retry_after_s

NOW = datetime(2024, 1, 15, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (10_000, 300.0)],
)
def test_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert Backoff(base_s=1.0, cap_s=300.0).ceiling(attempt) == ceiling


@given(
    st.integers(min_value=0, max_value=10**9),
    st.floats(min_value=0.001, max_value=60),
    st.floats(min_value=0.001, max_value=7200),
    st.integers(),
)
def test_delay_stays_within_zero_and_cap(attempt: int, base: float, cap: float, seed: int) -> None:
    backoff = Backoff(base_s=base, cap_s=cap)
    delay = backoff.delay(attempt, None, random.Random(seed))
    assert 0.0 <= delay <= cap


@given(
    st.integers(min_value=1, max_value=50),
    st.floats(min_value=0, max_value=10**7, allow_nan=False),
    st.integers(),
)
def test_retry_after_is_honoured_and_bounded(attempt: int, asked: float, seed: int) -> None:
    delay = Backoff().delay(attempt, asked, random.Random(seed))
    assert delay >= min(asked, RETRY_AFTER_MAX_S)
    assert delay <= max(300.0, RETRY_AFTER_MAX_S)


def test_full_jitter_spreads_delays() -> None:
    rng = random.Random(7)
    delays = [Backoff().delay(6, None, rng) for _ in range(2000)]
    # Full jitter: uniform over [0, 32]; both halves are well used.
    assert min(delays) < 4
    assert max(delays) > 28
    assert 12 < sum(delays) / len(delays) < 20


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Mon, 15 Jan 2024 01:31:00 GMT", 60.0),
        ("Mon, 15 Jan 2024 01:29:00 GMT", 0.0),
        ("Monday, 15-Jan-24 01:32:00 GMT", 120.0),
        ("Mon Jan 15 01:30:30 2024", 30.0),
        ("Mon, 15 Jan 2024 01:31:00 CET", None),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
    ids=str,
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header, NOW) == seconds


@given(st.text(max_size=40))
def test_retry_after_never_raises(header: str) -> None:
    result = retry_after_s(header, NOW)
    assert result is None or result >= 0


def test_retry_after_date_is_relative_to_now() -> None:
    later = NOW + timedelta(hours=1)
    assert retry_after_s("Mon, 15 Jan 2024 02:30:00 GMT", later) == 0.0
    assert retry_after_s("Mon, 15 Jan 2024 02:30:00 GMT", NOW) == 3600.0
