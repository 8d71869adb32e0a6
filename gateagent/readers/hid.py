"""The `hid` reader: a USB keyboard-wedge RFID reader, read with evdev.

SPEC "Readers", `hid`: the device is grabbed exclusively (EVIOCGRAB), so its keystrokes
never reach a console or a login prompt; `core.keys.KeyDecoder` turns key-down events
into cards. Unplugging is a state: the device is closed at once, reported disconnected,
and reopened and grabbed again when its path comes back.

The seam is `InputDevice`, the four members of `evdev.InputDevice` used here; tests
pass an `open_device` that returns a fake built on a pipe, fed real `evdev.InputEvent`s.
"""

from __future__ import annotations

import errno
import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import evdev

from gateagent.core.frames import Garbage
from gateagent.core.keys import KeyDecoder
from gateagent.readers.base import (
    RECONNECT_S,
    Dropped,
    Emit,
    Health,
    Lost,
    Unavailable,
    describe_open_error,
    drop,
    keep_reading,
    probe,
)

__all__ = ["HidSource", "InputDevice"]


class InputDevice(Protocol):
    """What the reader uses of `evdev.InputDevice`."""

    fd: int

    def grab(self) -> None: ...

    def read(self) -> Iterable[evdev.InputEvent]:
        """The queued events; raises `BlockingIOError` when there are none."""
        ...

    def close(self) -> None: ...


# Longest wait in select(): how late a partial read's warning is logged and how soon
# `stop` is noticed. A card is never delayed by it: select returns on the first key.
POLL_S = 0.2

# Open errors that mean "not there (yet)": after an unplug they keep the disconnected
# message, so an unplug is one health change and one log line, not two.
_MISSING = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})


class HidSource:
    def __init__(
        self,
        name: str,
        path: str,
        *,
        open_device: Callable[[str], InputDevice] = evdev.InputDevice,
        reconnect_s: float = RECONNECT_S,
        gap_s: float = 0.2,
        on_garbage: Dropped | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self._open_device = open_device
        self._reconnect_s = reconnect_s
        self._gap_s = gap_s
        self._on_garbage = on_garbage

    def probe(self) -> str | None:
        return probe(self._connect, _close)

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        keep_reading(
            self._connect,
            lambda device: self._read(device, emit, stop),
            _close,
            health=health,
            stop=stop,
            reconnect_s=self._reconnect_s,
        )

    def _connect(self, lost: str | None) -> InputDevice:
        """Open and grab the device, or raise Unavailable."""
        try:
            device = self._open_device(self.path)
        except OSError as exc:
            raise Unavailable(self._open_error(exc, lost)) from exc
        try:
            # Before the first read: keystrokes must never reach a console.
            device.grab()
        except OSError as exc:
            device.close()
            if exc.errno == errno.EBUSY:
                raise Unavailable(
                    f"busy: another program has grabbed {self.path} (a second gateagent,"
                    f" or a kiosk or X server?); find it with `fuser -v {self.path}`"
                ) from exc
            raise Unavailable(self._open_error(exc, lost)) from exc
        return device

    def _open_error(self, exc: OSError, lost: str | None) -> str:
        if lost is not None and exc.errno in _MISSING:
            return lost
        return describe_open_error(exc, self.path, "input")

    def _read(self, device: InputDevice, emit: Emit, stop: threading.Event) -> None:
        """Decode cards until `stop`; raises `Lost` when the device goes away."""
        decoder = KeyDecoder(self._gap_s)
        while not stop.is_set():
            try:
                readable, _, _ = select.select([device.fd], [], [], POLL_S)
                if readable:
                    self._drain(device, decoder, emit)
            except OSError as exc:
                raise Lost(self._lost_message(exc)) from exc
            # Event timestamps are CLOCK_REALTIME (evdev's default clock), so the gap
            # is measured on time.time(). A wall clock step can at worst drop, or keep a
            # little longer, one partial read: the card is simply presented again.
            dropped = decoder.expire(time.time())
            if dropped is not None:
                drop(self.name, dropped, self._on_garbage)

    def _drain(self, device: InputDevice, decoder: KeyDecoder, emit: Emit) -> None:
        # One read returns at most 64 events (evdev's read buffer); a card typed by a
        # wedge is more, so read until the queue is empty.
        while True:
            try:
                events = list(device.read())
            except BlockingIOError:
                return
            if not events:
                return
            for event in events:
                if event.type == evdev.ecodes.EV_KEY:
                    result = decoder.feed(event.code, event.value, event.timestamp())
                elif event.type == evdev.ecodes.EV_SYN and event.code == evdev.ecodes.SYN_DROPPED:
                    result = decoder.lost(event.timestamp())
                else:
                    continue  # SYN_REPORT and EV_MSC (scan codes) come between keys
                if isinstance(result, Garbage):
                    drop(self.name, result, self._on_garbage)
                elif result is not None:
                    emit(result.raw)

    def _lost_message(self, exc: OSError) -> str:
        # Once the USB device is removed the kernel answers ENODEV for the open file
        # (drivers/input/evdev.c), some hubs EIO. Any other error (EBADF: the descriptor
        # became invalid) also ends this file: it is closed and the path opened again.
        if exc.errno in (errno.ENODEV, errno.EIO):
            return f"disconnected: {self.path} was unplugged (reopened when it is back)"
        return f"disconnected: cannot read {self.path}: {exc.strerror or exc}"


def _close(device: InputDevice) -> None:
    # Closing the descriptor also releases the grab (evdev_release() in the kernel), so
    # there is no separate ungrab that could fail on a gone device.
    device.close()
