"""Times for people in the gate's zone, with the offset (issue 13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gateagent.core.localtime import local_time


@pytest.mark.parametrize(
    ("at", "zone", "text"),
    [
        (
            datetime(2026, 12, 1, 0, 15, 2, 731000, tzinfo=UTC),
            "Asia/Jakarta",
            "2026-12-01 07:15:02 +07:00",
        ),
        (
            datetime(2026, 11, 30, 20, 15, 2, tzinfo=UTC),
            "Asia/Jakarta",
            "2026-12-01 03:15:02 +07:00",
        ),
        (datetime(2026, 12, 1, 0, 15, 2), "Asia/Makassar", "2026-12-01 08:15:02 +08:00"),
        (datetime(2026, 12, 1, 0, 15, 2, tzinfo=UTC), "Asia/Kolkata", "2026-12-01 05:45:02 +05:30"),
        (datetime(2026, 12, 1, 0, 15, 2, tzinfo=UTC), "UTC", "2026-12-01 00:15:02 +00:00"),
        (
            datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC),
            "America/Sao_Paulo",
            "2026-07-01 09:00:00 -03:00",
        ),
        (
            datetime(2026, 12, 1, 7, 15, 2, tzinfo=timezone(timedelta(hours=7))),
            "Asia/Jakarta",
            "2026-12-01 07:15:02 +07:00",
        ),
    ],
    ids=[
        "jakarta",
        "jakarta-next-day",
        "naive-is-utc",
        "half-hour",
        "utc",
        "negative",
        "aware-input",
    ],
)
def test_local_time(at: datetime, zone: str, text: str) -> None:
    assert local_time(at, ZoneInfo(zone)) == text
