"""The `stdin` reader: one card per line, for a reader typing into a terminal and for tests."""

from __future__ import annotations

import os
import threading

from gateagent.core.frames import LinesDecoder
from gateagent.readers.base import Dropped, Emit, Health, hand_over


class StdinSource:
    def __init__(self, name: str, fd: int = 0, on_garbage: Dropped | None = None) -> None:
        self.name = name
        self._fd = fd
        self._on_garbage = on_garbage

    def probe(self) -> str | None:
        return None  # standard input is always there

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        decoder = LinesDecoder()
        health(True, None)
        while not stop.is_set():
            try:
                chunk = os.read(self._fd, 4096)
            except OSError as exc:
                health(False, f"cannot read standard input: {exc.strerror}")
                return
            if not chunk:
                # Under systemd standard input is /dev/null: the end is no error.
                health(False, "end of input")
                return
            hand_over(self.name, decoder.feed(chunk), emit, self._on_garbage)
