"""SPEC "Time": a held tap's time is wall_at_sync - (mono_at_sync - mono_at_tap)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateagent.core.clockfix import correct

WALLS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
MONOS = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)


def test_spec_example() -> None:
    # Tapped at 100 s after boot, clock synchronized at 400 s to 01:30:00Z.
    synced = datetime(2024, 1, 15, 1, 30, tzinfo=UTC)
    assert correct(synced, 400.0, 100.0) == datetime(2024, 1, 15, 1, 25, tzinfo=UTC)


def test_sub_second_monotonic_times_keep_milliseconds() -> None:
    synced = datetime(2024, 1, 15, 1, 30, tzinfo=UTC)
    assert correct(synced, 10.25, 10.0) == datetime(2024, 1, 15, 1, 29, 59, 750_000, tzinfo=UTC)


def test_other_timezones_are_the_same_instant() -> None:
    jakarta = timezone(timedelta(hours=7))
    synced = datetime(2024, 1, 15, 8, 30, tzinfo=jakarta)
    assert correct(synced, 60.0, 0.0) == datetime(2024, 1, 15, 1, 29, tzinfo=UTC)


def test_naive_wall_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        correct(datetime(2024, 1, 15, 1, 30), 1.0, 0.0)


@given(WALLS, MONOS, MONOS)
def test_corrected_time_plus_elapsed_is_the_sync_time(
    wall_at_sync: datetime, mono_at_sync: float, mono_at_tap: float
) -> None:
    corrected = correct(wall_at_sync, mono_at_sync, mono_at_tap)
    assert corrected + timedelta(seconds=mono_at_sync - mono_at_tap) == wall_at_sync


@given(WALLS, MONOS, MONOS, MONOS)
def test_correction_keeps_the_spacing_of_taps(
    wall_at_sync: datetime, mono_at_sync: float, first: float, second: float
) -> None:
    earlier, later = sorted((first, second))
    spacing = correct(wall_at_sync, mono_at_sync, later) - correct(
        wall_at_sync, mono_at_sync, earlier
    )
    assert abs(spacing.total_seconds() - (later - earlier)) <= 2e-6 + 1e-9 * abs(mono_at_sync)
