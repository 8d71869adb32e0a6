"""`gateagent listen`: print each card as the readers read it; record and send nothing.

A technician at the gate taps a card whose number the school's database holds and
picks the `card_format` whose line matches: every format is shown for each read, the
configured one marked, with the time in the gate's zone. A serial reader's bytes are
shown in hex as they come (before each read, or after half a second without one), so a
reader set to the wrong protocol or baud rate is not silence.
"""

from __future__ import annotations

import queue
import sys
import threading
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, TextIO

from gateagent.config import Reader
from gateagent.core.cards import CARD_FORMATS, CardFormat, InvalidCard, all_formats, normalize
from gateagent.core.feedback import Signal
from gateagent.core.frames import Garbage
from gateagent.core.localtime import local_time
from gateagent.readers import source_for
from gateagent.readers.base import start
from gateagent.readers.serial import SerialSource

if TYPE_CHECKING:
    from gateagent.feedback import Feedback

Event = tuple[str, str, object]  # (reader, "read" | "health" | "bytes", payload)


def listen(
    readers: list[Reader],
    card_format: CardFormat,
    reverse_bytes: bool,
    tz: tzinfo,
    *,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
    feedback: Feedback | None = None,
) -> int:
    """Run until Ctrl-C (or `stop`); 0. Times are shown in `tz` ([device] timezone). With
    `feedback`, each read sounds as a tap would: recorded, or unreadable when it is not
    a card number in the configured card_format or the reader dropped it (a failed
    checksum, a partial read, noise), once per burst as the daemon does."""
    stop = stop or threading.Event()
    events: queue.Queue[Event] = queue.Queue()
    names = ", ".join(f"{r.name} ({r.kind}{' ' + r.path if r.path else ''})" for r in readers)
    print(f"listening on {names}; nothing is recorded or sent. Ctrl-C to stop.", file=out)

    def dropped(name: str, garbage: Garbage) -> None:
        # A read the reader dropped, which it logs (`read dropped: ...`, on stderr); in
        # the reader's thread, and the feedback never blocks.
        if feedback is not None:
            feedback.unreadable(name)

    for reader in readers:

        def emit(raw: str, name: str = reader.name) -> None:
            events.put((name, "read", raw))

        def health(ok: bool, error: str | None, name: str = reader.name) -> None:
            events.put((name, "health", "connected" if ok else f"not connected: {error}"))

        source = source_for(reader, on_garbage=dropped)
        if isinstance(source, SerialSource):
            # The bytes as they come, before decoding: a reader set to the wrong protocol
            # or baud rate shows what it sends instead of nothing (issue 13).
            def raw_bytes(chunk: bytes, name: str = reader.name) -> None:
                events.put((name, "bytes", chunk))

            source.on_bytes = raw_bytes
        start(source, emit, health, stop)
    # A reader's bytes since its last read: a port hands them over in arbitrary pieces,
    # so they are shown together, before the read they made or once the line is quiet.
    pending: dict[str, bytearray] = {}

    def show_bytes(name: str) -> None:
        if chunk := pending.pop(name, None):
            print(f"{name}: bytes {chunk.hex(' ')}", file=out, flush=True)

    try:
        while not stop.is_set():
            try:
                name, kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                for name in list(pending):
                    show_bytes(name)
                continue
            if kind == "bytes":
                assert isinstance(payload, bytes)
                pending.setdefault(name, bytearray()).extend(payload)
                continue
            show_bytes(name)
            if kind == "health":
                print(f"reader {name}: {payload}", file=out, flush=True)
            else:
                at = local_time(datetime.now(UTC), tz)
                text = describe(name, str(payload), card_format, reverse_bytes)
                print(f"{at} {text}", file=out, flush=True)
                if feedback is not None:
                    _sound(feedback, name, str(payload), card_format, reverse_bytes)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


def _sound(
    feedback: Feedback, reader: str, raw: str, card_format: CardFormat, reverse_bytes: bool
) -> None:
    card_no = normalize(raw, card_format, reverse_bytes)
    if isinstance(card_no, InvalidCard):
        feedback.unreadable(reader)
    else:
        feedback.sound(Signal.RECORDED, reader, card_no)


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
