"""Card readers: each runs in its own thread and hands decoded reads to the daemon."""

from __future__ import annotations

from gateagent.config import Reader
from gateagent.readers.base import EVDEV_MISSING, Dropped, Source, Unusable
from gateagent.readers.serial import SerialSource
from gateagent.readers.stdin import StdinSource


def source_for(reader: Reader, on_garbage: Dropped | None = None) -> Source:
    """The reader a `[[readers]]` table describes; `on_garbage` hears the reads it drops."""
    if reader.kind == "stdin":
        return StdinSource(reader.name, on_garbage=on_garbage)
    # config.load() makes sure hid and serial readers have a path.
    assert reader.path is not None
    if reader.kind == "hid":
        # evdev (and its tables of every key code) only on gates that have a hid reader,
        # and only there is it needed at all.
        try:
            from gateagent.readers.hid import HidSource  # noqa: PLC0415
        except ImportError:
            return Unusable(reader.name, EVDEV_MISSING)
        return HidSource(reader.name, reader.path, on_garbage=on_garbage)
    return SerialSource(
        reader.name, reader.path, reader.baudrate, reader.protocol, on_garbage=on_garbage
    )
