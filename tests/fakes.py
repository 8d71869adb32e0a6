"""Test doubles for gateagent's seams (not part of the package)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta


class FakeClock:
    """A `gateagent.clock.Clock` that moves only when a test says so.

    `advance()` moves wall and monotonic time together, as real time passing does;
    `set_wall()` jumps the wall clock alone, as NTP correcting a Pi that booted with the
    last saved time; `reboot()` starts a new boot with its own monotonic clock.
    """

    def __init__(
        self,
        wall: datetime = datetime(2024, 1, 15, 1, 30, tzinfo=UTC),
        mono: float = 1000.0,
        boot: str = "6a2b3c4d-0000-4000-8000-000000000001",
        synced: bool = True,
    ) -> None:
        self.wall = _aware(wall)
        self.mono = mono
        self.boot = boot
        self.synced = synced

    def now_utc(self) -> datetime:
        return self.wall

    def now_mono(self) -> float:
        return self.mono

    def boot_id(self) -> str:
        return self.boot

    def synchronized(self) -> bool:
        return self.synced

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def set_wall(self, wall: datetime) -> None:
        self.wall = _aware(wall)

    def reboot(self, wall: datetime | None = None, mono: float = 5.0) -> None:
        """A new boot: new boot id, monotonic time from near zero, clock not synchronized."""
        self.boot = str(uuid.uuid4())
        self.mono = mono
        self.synced = False
        if wall is not None:
            self.wall = _aware(wall)


def _aware(wall: datetime) -> datetime:
    if wall.utcoffset() is None:
        raise ValueError("FakeClock needs an aware datetime")
    return wall.astimezone(UTC)
