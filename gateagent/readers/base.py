"""The contract every reader meets, and the thread that runs one.

A reader blocks on its device in its own thread (pyserial, evdev and stdin all offer
blocking reads with a timeout), so one reader's trouble never stalls another reader or
the uploader. It hands each decoded card to `emit` and reports its health on change.
A read it drops as garbage (a failed checksum, a partial read, noise) is logged and
told to `on_garbage`, if it was given one (the daemon: "unreadable" at the gate).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from gateagent.core.frames import Frame, Garbage

log = logging.getLogger(__name__)

Emit = Callable[[str], None]
Health = Callable[[bool, str | None], None]
# A read dropped as garbage, with the reader's name.
Dropped = Callable[[str, Garbage], None]


class Source(Protocol):
    name: str

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        """Read until `stop` is set; never raise for a device problem (report it to `health`)."""

    def probe(self) -> str | None:
        """Open and release the device as `run` would (`gateagent check`); why it cannot
        be opened, or None."""


def hand_over(
    reader: str, items: Iterable[Frame | Garbage], emit: Emit, on_garbage: Dropped | None = None
) -> None:
    """Decoded frames go to `emit`; garbage is dropped (`drop`), and never stops a
    reader: noise on the line or a bad checksum is only that read's problem."""
    for item in items:
        if isinstance(item, Garbage):
            drop(reader, item, on_garbage)
        else:
            emit(item.raw)


def drop(reader: str, garbage: Garbage, on_garbage: Dropped | None = None) -> None:
    """Log a read dropped as garbage and tell `on_garbage` (which must not block)."""
    log.warning(
        "read dropped: garbage reader=%s reason=%s data=%r",
        reader,
        garbage.reason,
        garbage.data[:40],
    )
    if on_garbage is not None:
        on_garbage(reader, garbage)


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


# Only hid readers need evdev, an optional dependency (README "Quick start"): PyPI has
# it as source only, and on a Pi it comes from Debian.
EVDEV_MISSING = (
    "the evdev module is not installed (on a Pi: apt-get install python3-evdev, then"
    " ./systemd/install.sh again; elsewhere: pip install 'gateagent[hid]')"
)


class Unusable:
    """A reader that cannot run in this installation (a hid reader without evdev): it
    reports why as its state, once, and `check` shows it, instead of a traceback."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def probe(self) -> str | None:
        return self.reason

    def run(self, emit: Emit, health: Health, stop: threading.Event) -> None:
        health(False, self.reason)
        stop.wait()


# Seconds between attempts to open a reader that is missing, busy or unplugged: quick
# enough that a replugged reader works before the next student, cheap enough to cost no
# measurable CPU while it stays away.
RECONNECT_S = 1.5


def describe_open_error(error: OSError, path: str, group: str) -> str:
    """What a technician should know and do when `path` cannot be opened."""
    code = error.errno
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return f"missing: {path} is not there (unplugged? see `gateagent readers`)"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to open {path}: add the gateagent user to the '{group}' group"
            f" (usermod -aG {group} gateagent)"
        )
    if code in (errno.EBUSY, errno.EAGAIN):
        return f"busy: another program holds {path} (stop it, or `fuser -v {path}`)"
    return f"cannot open {path}: {error.strerror or error}"


class Lost(Exception):
    """The open device stopped working; the message is for `health`."""


class Unavailable(Exception):
    """The device cannot be opened now; the message is for `health`."""


Device = TypeVar("Device")


def keep_reading(
    connect: Callable[[str | None], Device],
    read: Callable[[Device], None],
    close: Callable[[Device], None],
    *,
    health: Health,
    stop: threading.Event,
    reconnect_s: float,
) -> None:
    """Open, read until the device is lost, close, and again, until `stop`.

    `connect(lost)` opens the device or raises Unavailable; `lost` is why the last one
    went away, so that an unplugged device still missing can keep that message (one
    health change and one log line per unplug, not two). `read` raises Lost. Only
    changes of state reach `health`.
    """
    state: tuple[bool, str | None] | None = None

    def report(ok: bool, error: str | None) -> None:
        nonlocal state
        if state != (ok, error):
            state = (ok, error)
            health(ok, error)

    lost: str | None = None
    while not stop.is_set():
        try:
            device = connect(lost)
        except Unavailable as exc:
            report(False, str(exc))
            stop.wait(reconnect_s)
            continue
        try:
            report(True, None)
            lost = None
            read(device)
        except Lost as exc:
            lost = str(exc)
            report(False, lost)
        finally:
            close(device)
        if lost is not None:
            # Wait before reopening: udev needs a moment to remove or re-point the
            # by-id link, and a device that fails at once must not spin.
            stop.wait(reconnect_s)


def probe(connect: Callable[[str | None], Device], close: Callable[[Device], None]) -> str | None:
    """Open and close the device as `keep_reading` would; why it cannot be, or None."""
    try:
        device = connect(None)
    except Unavailable as exc:
        return str(exc)
    close(device)
    return None
