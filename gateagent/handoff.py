"""Items handed from other threads to the event loop, one wake-up per burst.

Reader threads hand over reads and the recorder's writer thread its committed taps. A
wake-up of the loop (`call_soon_threadsafe`) is a system call and a trip through the
loop; under a burst (a pipe or serial chunk of hundreds of cards) one per item would
cost more than the items, so a burst shares one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class Handoff(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Callable[[T], None]) -> None:
        self._loop = loop
        self._handle = handle
        self._items: deque[T] = deque()
        # A plain flag, not a threading.Event: each read and write of an attribute is
        # one atomic step in CPython, which is all the argument in put() needs, and an
        # Event's lock cost a lone tap as much as the wake-up itself.
        self._woken = False

    def put(self, item: T) -> None:
        """From any thread: `handle(item)` runs on the loop soon, items in put order."""
        self._items.append(item)
        # Appended before the check, and the loop clears the flag before it drains: an
        # item is either drained by a pass that is still to come, or wakes the loop.
        # Two threads that both find the flag clear both wake it: one pass finds nothing.
        if not self._woken:
            self._woken = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._woken = False
        while self._items:
            item = self._items.popleft()
            try:
                self._handle(item)
            except Exception:  # one item's trouble must not strand the items behind it
                log.exception("handling an item from another thread failed")
