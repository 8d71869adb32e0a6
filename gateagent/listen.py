"""`gateagent listen`: print each card as the readers read it; record and send nothing.

A technician at the gate taps a card whose number the school's database holds and
picks the `card_format` whose line matches: every format is shown for each read, the
configured one marked.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from gateagent.config import Reader
from gateagent.core.cards import CARD_FORMATS, CardFormat, InvalidCard, all_formats, normalize
from gateagent.core.feedback import Signal
from gateagent.readers import source_for
from gateagent.readers.base import start

if TYPE_CHECKING:
    from gateagent.feedback import Feedback

Event = tuple[str, str, object]  # (reader, "read" | "health", payload)


def listen(
    readers: list[Reader],
    card_format: CardFormat,
    reverse_bytes: bool,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
    *,
    feedback: Feedback | None = None,
) -> int:
    """Run until Ctrl-C (or `stop`); 0. With `feedback`, each read sounds as a tap
    would: recorded, or unreadable in the configured card_format."""
    stop = stop or threading.Event()
    events: queue.Queue[Event] = queue.Queue()
    names = ", ".join(f"{r.name} ({r.kind}{' ' + r.path if r.path else ''})" for r in readers)
    print(f"listening on {names}; nothing is recorded or sent. Ctrl-C to stop.", file=out)
    for reader in readers:

        def emit(raw: str, name: str = reader.name) -> None:
            events.put((name, "read", raw))

        def health(ok: bool, error: str | None, name: str = reader.name) -> None:
            events.put((name, "health", "connected" if ok else f"not connected: {error}"))

        start(source_for(reader), emit, health, stop)
    try:
        while not stop.is_set():
            try:
                name, kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "health":
                print(f"reader {name}: {payload}", file=out, flush=True)
            else:
                print(
                    describe(name, str(payload), card_format, reverse_bytes), file=out, flush=True
                )
                if feedback is not None:
                    card_no = normalize(str(payload), card_format, reverse_bytes)
                    if isinstance(card_no, InvalidCard):
                        feedback.sound(Signal.UNREADABLE, name)
                    else:
                        feedback.sound(Signal.RECORDED, name, card_no)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


def describe(reader: str, raw: str, card_format: CardFormat, reverse_bytes: bool) -> str:
    """One read in every card_format; the configured one marked."""
    lines = [f"{reader}: read {raw!r}" + (" (reverse_bytes = true)" if reverse_bytes else "")]
    formats = all_formats(raw, reverse_bytes)
    for name in CARD_FORMATS:
        value = formats[name]
        shown = f"(not a card number: {value.reason})" if isinstance(value, InvalidCard) else value
        mark = "   <- card_format now" if name == card_format else ""
        lines.append(f"  {name:<12} {shown}{mark}")
    return "\n".join(lines)
