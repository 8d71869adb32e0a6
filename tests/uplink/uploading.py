"""Running an uploader in a test: taps put in its database, its rows read back."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateagent.config import Config
from gateagent.core.backoff import Backoff
from gateagent.store import NewTap, Store, Tap
from gateagent.uplink.client import Uploader

FAST = Backoff(base_s=0.01, cap_s=0.05)
# Now, but never later than 14:00 at the gate (tests/settings.py's Asia/Jakarta): the
# tests record taps up to 9 hours after NOW, and the simulator refuses a tap of the
# gate's tomorrow ("Cannot add attendance for tomorrow onwards"), so they failed every
# day from 15:00 at the gate (08:00 UTC) until its midnight.
_AT_GATE = datetime.now(ZoneInfo("Asia/Jakarta"))
NOW = (
    min(_AT_GATE, _AT_GATE.replace(hour=14, minute=0, second=0))
    .astimezone(UTC)
    .replace(microsecond=123456)
)


def record(
    store: Store, settings: Config, card_no: str, at: datetime = NOW, direction: str = "auto"
) -> Tap:
    return store.record(
        NewTap(
            tap_id=str(uuid.uuid4()),
            card_no=card_no,
            reader="desk",
            gate=None,
            direction=direction,  # type: ignore[arg-type]
            tapped_at=at,
            at_mono=1.0,
            boot_id="b",
            clock_synced=True,
        ),
        settings.device.tz,
        settings.taps.min_checkout_after,
        hold=False,
    )


def states(settings: Config) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(settings.storage.path)
    try:
        return conn.execute(
            "SELECT card_no, checktype, state, reason, student_name, attendance_status"
            " FROM taps ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


async def uploading(
    settings: Config,
    until: Callable[[], bool],
    *,
    before: Callable[[Store], None] = lambda store: None,
    during: Callable[[Store, Uploader], Any] | None = None,
    timeout_s: float = 20.0,
) -> Uploader:
    """Run an uploader over the settings' database until `until()` holds."""
    store = Store.open(settings.storage.path)
    before(store)
    uploader = Uploader(
        settings.storage.path, settings, rng=random.Random(1), backoff=FAST, pause_backoff=FAST
    )
    stopping = asyncio.Event()
    task = asyncio.ensure_future(uploader.run(stopping))
    try:
        if during is not None:
            await during(store, uploader)
        await eventually(until, timeout_s, "uploader did not finish")
    finally:
        stopping.set()
        await task
        store.close()
    return uploader


async def eventually(
    condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "never happened"
) -> None:
    """Until `condition()` holds: answers come from the simulator's threads."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


def settled(settings: Config, count: int) -> Callable[[], bool]:
    def done() -> bool:
        rows = states(settings)
        return len(rows) >= count and all(row[2] in ("delivered", "rejected") for row in rows)

    return done
