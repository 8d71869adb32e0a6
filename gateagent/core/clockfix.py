"""Correct the time of a tap recorded before the clock was synchronized.

SPEC "Time": a tap recorded while the wall clock was not synchronized is held; when the
clock synchronizes in the same boot, its time becomes

    wall_at_sync - (mono_at_sync - mono_at_tap)

that is, the synchronized wall time minus the monotonic time that passed between the
tap and the sync. It is only valid when both monotonic readings come from the same
boot (the caller compares boot ids); across a reboot the monotonic clock restarted and
the tap stays held as `clock-unknown`.
"""

from datetime import datetime, timedelta


def correct(wall_at_sync: datetime, mono_at_sync: float, mono_at_tap: float) -> datetime:
    """The tap's wall time, from the first synchronized reading of the same boot.

    `wall_at_sync` must be aware (the store keeps UTC); the result is in its timezone,
    rounded to the microsecond as datetimes are.
    """
    if wall_at_sync.utcoffset() is None:
        raise ValueError("wall_at_sync must be timezone-aware")
    return wall_at_sync - timedelta(seconds=mono_at_sync - mono_at_tap)
