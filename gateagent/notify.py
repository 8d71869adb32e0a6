"""systemd's notify protocol (sd_notify(3)) without libsystemd or a compiled binding.

SPEC "Operations": the unit is `Type=notify`; the daemon sends `READY=1` once the
database is open, a one-line `STATUS=`, `WATCHDOG=1` only while its loops are alive,
and `STOPPING=1` when it shuts down.

The protocol is small enough to speak directly: one AF_UNIX SOCK_DGRAM datagram per
notification, newline-separated `KEY=value` assignments, sent to the socket named by
`$NOTIFY_SOCKET`: a file system path, or, starting with `@`, a name in Linux's abstract
namespace (the `@` stands for a leading NUL byte). Without the variable (a terminal, a
test, `Type=simple`) every call is a no-op.

Notification must never stop the daemon: a send that fails (systemd restarted, socket
gone, buffer full) is logged once at debug and otherwise ignored; the next watchdog
ping simply tries again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify(3) messages to systemd, or nothing when not started by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        """`address` as in $NOTIFY_SOCKET (`/path` or `@abstract`); None disables sending."""
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if self._address is not None else None
        self._socket: socket.socket | None = None
        self._last_status: str | None = None
        self._failing = False
        # The watchdog timer and the status updates may run in different threads.
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """From $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (systemd.exec(5))."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of WatchdogSec=, as sd_watchdog_enabled(3)
        advises; None when the watchdog is off (or notifications are)."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self) -> bool:
        return self.send(READY=1)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """Send STATUS= if `text` differs from the last one sent; newlines become spaces.

        The daemon may call this on every loop turn; systemd only needs the changes.
        """
        line = " ".join(text.split())
        if line == self._last_status:
            return True
        sent = self.send(STATUS=line)
        if sent:
            self._last_status = line
        return sent

    def send(self, **fields: str | int) -> bool:
        """Send `KEY=value` assignments in one datagram; True if it was sent."""
        if self._address is None or not fields:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    # Never wait: when the receiver's queue is full, an AF_UNIX datagram
                    # socket still polls writable, so a send with a timeout spins the CPU
                    # until it expires. A dropped ping is followed by the next one.
                    self._socket.setblocking(False)
                self._socket.sendto(message.encode(), self._address)
            except OSError as error:
                # Logged once per run of failures: a gone systemd must not flood the log.
                if not self._failing:
                    log.debug(
                        "systemd notification failed socket=%r error=%s", self._address, error
                    )
                    self._failing = True
                return False
            self._failing = False
            return True

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd 254 also offers "vsock:CID:PORT", for virtual machines; not for a gate.
    log.debug("NOTIFY_SOCKET not supported, notifications off socket=%s", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC if the watchdog is meant for this process (sd_watchdog_enabled(3))."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    # WATCHDOG_PID names the process the watchdog is for; a child that inherited the
    # variables must not ping on its parent's behalf.
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec
