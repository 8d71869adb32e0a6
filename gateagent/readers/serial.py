"""The `serial` reader: an RDM6300 or ID-12LA module on a USB-UART or the Pi's UART.

SPEC "Readers", `serial`: the port is opened exclusively by its stable path
(`/dev/serial/by-id/...`, or `/dev/serial0`). Bytes go to `core.frames`: `rdm6300` is
STX 0x02, 10 ASCII hex, 2 ASCII hex XOR checksum, ETX 0x03 (RDM6300 datasheet, "Output
data format"; ID-12LA/ID-20LA add CR LF before ETX, ID-Innovations datasheet, "ASCII
data format"); `lines` is ASCII ended by CR and/or LF. Every good frame is emitted: an
RDM6300 repeats its frame while a card is held, and the daemon's sliding-window
debouncer (SPEC "Tap decisions") makes that one tap, so this reader never debounces.

Bytes that form no frame for `NOISE_WARN_S` (a reader set to the wrong `protocol`, a
wrong baud rate) give one warning per reader with the first bytes in hex and what they
look like (`core.frames.unframed_hint`): otherwise a wrong protocol is silence.

Unplugging is a state (SPEC "Readers"): the port is closed at once, reported
disconnected, and opened again when its path comes back, every `reconnect_s`, so a
missing reader costs no measurable CPU. Health is reported only when it changes.

What pyserial 3.5 (serialposix.py) raises, and what it means here:

- open, path missing / no permission: `SerialException(errno, "could not open port ...")`,
  the `os.open` errno (ENOENT, EACCES) in `.errno`.
- open, another process holds the exclusive lock: `SerialException(errno, "Could not
  exclusively lock port ...")` with flock's EWOULDBLOCK (= EAGAIN) in `.errno`.
- open, not a tty: `SerialException("Could not configure port: ...")`, no errno; a tty
  that vanishes during open can also fail `tcsetattr`/`tcflush` with `termios.error`,
  which is not an OSError.
- reading a hung-up tty (USB unplugged, pty master closed): `in_waiting` is a bare
  `ioctl` and raises `OSError(EIO)`; `read()` raises `SerialException("device reports
  readiness to read but returned no data ...")`, or `SerialException("read failed:
  [Errno 5] ...")`, with no errno. `SerialException` subclasses `OSError`, so one
  `except OSError` covers reads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import termios
import threading
import time
from collections.abc import Callable
from typing import Literal

import serial

from gateagent.core.frames import Frame, decoder_for, unframed_hint
from gateagent.readers.base import (
    RECONNECT_S,
    Dropped,
    Emit,
    Health,
    Lost,
    Unavailable,
    describe_open_error,
    hand_over,
    keep_reading,
    probe,
)

__all__ = ["SerialSource", "open_port"]

log = logging.getLogger(__name__)

# Seconds of bytes without a frame before the warning: a card's frame takes 15 ms at
# 9600 baud, and a held card repeats it every few hundred, so 3 s of bytes without one
# is no glitch; and it is soon enough for a technician still standing at the reader.
NOISE_WARN_S = 3.0
# How many of those bytes are kept to judge them, and how many the warning shows.
_SAMPLE = 64
_SHOWN = 16

# The group whose members may open serial ports on Debian / Raspberry Pi OS
# (SPEC "Operations": the gateagent user is in `input` and `dialout`).
GROUP = "dialout"

# Open errors that mean "not there (yet)". After an unplug they keep the disconnected
# message, so an unplug is one health change (and one log line), not two. A tty being
# torn down answers EIO to open, so it counts as gone as well.
_GONE = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EIO})


def open_port(path: str, baudrate: int, timeout_s: float) -> serial.Serial:
    """Open the reader's port, locked against other readers of our cards.

    `exclusive=True` takes flock(LOCK_EX | LOCK_NB) on the descriptor: a second
    gateagent, or any pyserial program, fails with "busy" instead of sharing the bytes.
    """
    return serial.Serial(path, baudrate, timeout=timeout_s, exclusive=True)


class SerialSource:
    def __init__(
        self,
        name: str,
        path: str,
        baudrate: int,
        protocol: Literal["rdm6300", "lines"],
        *,
        reconnect_s: float = RECONNECT_S,
        read_timeout_s: float = 1.0,
        open_port: Callable[[str, int, float], serial.Serial] = open_port,
        noise_warn_s: float = NOISE_WARN_S,
        on_garbage: Dropped | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.baudrate = baudrate
        self.protocol = protocol
        self._reconnect_s = reconnect_s
        self._read_timeout_s = read_timeout_s
        self._open_port = open_port
        self._noise_warn_s = noise_warn_s
        self._on_garbage = on_garbage
        self._warned = False  # the wrong-protocol warning is given once per reader
        # Every chunk as it comes, before decoding (`gateagent listen` shows them).
        self.on_bytes: Callable[[bytes], None] | None = None

    def probe(self) -> str | None:
        return probe(self._connect, _close)

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        keep_reading(
            self._connect,
            lambda port: self._read(port, emit, stop),
            _close,
            health=health,
            stop=stop,
            reconnect_s=self._reconnect_s,
        )

    def _connect(self, lost: str | None) -> serial.Serial:
        """Open the port, or raise Unavailable."""
        try:
            return self._open_port(self.path, self.baudrate, self._read_timeout_s)
        except (OSError, termios.error) as exc:
            error = _open_errno(exc)
            if lost is not None and error.errno in _GONE:
                raise Unavailable(lost) from exc
            raise Unavailable(describe_open_error(error, self.path, GROUP)) from exc
        except ValueError as exc:
            # pyserial's check of the port settings (e.g. a baud rate the platform
            # refuses). Reported, and the thread stays alive: a dead reader thread would
            # make the watchdog restart the whole daemon over one reader's setting.
            raise Unavailable(f"cannot open {self.path}: {exc}") from exc

    def _read(self, port: serial.Serial, emit: Emit, stop: threading.Event) -> None:
        """Decode cards until `stop`; raises `Lost` when the port goes away."""
        # A fresh decoder per open: half a frame from before an unplug is not joined to
        # the first bytes after it.
        decoder = decoder_for(self.protocol)
        try:
            opened = os.fstat(port.fileno())
        except OSError as exc:  # gone between open and here
            raise Lost(self._lost_message(exc)) from exc
        unframed = bytearray()  # the first bytes since the last frame
        unframed_since: float | None = None
        while not stop.is_set():
            try:
                # Whatever is buffered, or else block for the first byte up to the read
                # timeout (pyserial's read(n) returns early only once n bytes are in):
                # a card is decoded as soon as it arrives, and `stop` is seen within
                # `read_timeout_s`.
                chunk = port.read(port.in_waiting or 1)
            except OSError as exc:
                raise Lost(self._lost_message(exc)) from exc
            now = time.monotonic()
            if chunk:
                if self.on_bytes is not None:
                    self.on_bytes(chunk)
                items = decoder.feed(chunk)
                if any(isinstance(item, Frame) for item in items):
                    unframed.clear()
                    unframed_since = None
                else:
                    unframed += chunk[: _SAMPLE - len(unframed)]
                    unframed_since = now if unframed_since is None else unframed_since
                hand_over(self.name, items, emit, self._on_garbage)
            else:
                # Idle: does the configured path still lead to this port? A by-id link
                # removed or moved to another tty means the reader we hold is not the
                # configured one any more (one stat per read timeout costs nothing).
                self._check_path(opened)
            if unframed_since is not None and now - unframed_since >= self._noise_warn_s:
                self._warn_unframed(bytes(unframed))
                unframed.clear()
                unframed_since = None

    def _warn_unframed(self, data: bytes) -> None:
        hint = unframed_hint(self.protocol, data)
        if hint is None or self._warned:
            return
        self._warned = True
        log.warning(
            'bytes but no card frame for %g s reader=%s protocol=%s first_bytes="%s": %s',
            self._noise_warn_s,
            self.name,
            self.protocol,
            data[:_SHOWN].hex(" "),
            hint,
        )

    def _check_path(self, opened: os.stat_result) -> None:
        try:
            now = os.stat(self.path)
        except OSError as exc:
            raise Lost(
                f"disconnected: {self.path} is gone (unplugged? reopened when it is back)"
            ) from exc
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            raise Lost(f"disconnected: {self.path} now leads to another port (reopening it)")

    def _lost_message(self, exc: OSError) -> str:
        code = exc.errno
        if code is None and isinstance(exc.__context__, OSError):
            # pyserial raises "read failed: ..." inside its `except OSError`, without
            # the errno: the original error is the exception's context.
            code = exc.__context__.errno
        # A hung-up tty answers EIO to ioctl and an empty read to read() (pyserial:
        # "device reports readiness to read but returned no data"); a removed USB
        # device may answer ENODEV.
        if code in (errno.EIO, errno.ENODEV) or "returned no data" in str(exc):
            return f"disconnected: {self.path} was unplugged (reopened when it is back)"
        reason = os.strerror(code) if code is not None else str(exc)
        return f"disconnected: cannot read {self.path}: {reason}"


def _open_errno(exc: OSError | termios.error) -> OSError:
    """The underlying errno of an open failure, as a plain OSError for the message."""
    if isinstance(exc, termios.error):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    else:
        code = exc.errno
    if code is None and "exclusively lock" in str(exc):
        # pyserial 3.5 passes flock's errno along; older releases raised the lock
        # failure with a message only. Either way another program holds the port.
        code = errno.EBUSY
    if code is None:
        # "Could not configure port: ..." (not a tty): the message is all there is.
        return OSError(str(exc))
    # pyserial's strerror repeats the path and the errno; keep the plain reason.
    return OSError(code, os.strerror(code))


def _close(port: serial.Serial) -> None:
    # Closing a port whose device is gone may fail; the descriptor is released by the
    # kernel either way, and there is nothing left to do with it.
    with contextlib.suppress(OSError):
        port.close()
