"""The contract every reader meets, and the thread that runs one.

A reader blocks on its device in its own thread (pyserial, evdev and stdin all offer
blocking reads with a timeout), so one reader's trouble never stalls another reader or
the uploader. It hands each decoded card to `emit` and reports its health on change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

Emit = Callable[[str], None]
Health = Callable[[bool, str | None], None]


class Source(Protocol):
    name: str

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        """Read until `stop` is set; never raise for a device problem (report it to `health`)."""


def start(source: Source, emit: Emit, health: Health, stop: threading.Event) -> threading.Thread:
    """Run `source` in a daemon thread: a read blocked in the kernel never delays exit."""

    def guarded() -> None:
        try:
            source.run(emit, health, stop)
        except Exception as exc:  # a bug in one reader must not take the gate down
            log.exception("reader stopped by an error reader=%s", source.name)
            health(False, f"reader stopped: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=guarded, name=f"reader-{source.name}", daemon=True)
    thread.start()
    return thread
