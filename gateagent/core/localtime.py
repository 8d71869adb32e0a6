"""Times for people: in the gate's time zone, with its offset (issue 13).

`[device] timezone` is the gate's local day (SPEC "Tap decisions"), so it is also the
time a technician reads in `listen`, `export`'s `local_time`, `status` and a terminal's
log lines: `2026-12-01 07:15:02 +07:00`, whatever the machine's own zone. The offset is
always shown, so a time is never mistaken for UTC or for the machine's zone. JSON keeps
UTC (SPEC "Command line").
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

__all__ = ["local_time"]


def local_time(at: datetime, tz: tzinfo) -> str:
    """`at` in `tz` as `YYYY-MM-DD HH:MM:SS +HH:MM`; a naive `at` is taken as UTC (the
    store's times are UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(tz)
    offset = local.strftime("%z")  # +0700, or +053000 for a zone with seconds
    return f"{local:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:5]}"
