"""`gateagent check`: is this gate ready? One line per check, OK or FAIL and what to do.

It validates the configuration, opens and releases each reader, reaches the server
(DNS, TCP, TLS) without sending anything (never a tap: that would create an attendance
record), checks that the state directory is writable and that the clock is
synchronized. Exit status 0 only when every check passes.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateagent.clock import Clock
from gateagent.config import Config, Reader

NETWORK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Result:
    ok: bool
    what: str
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.what}: {self.detail}"


Probe = Callable[[Reader], str | None]


def run_checks(settings: Config, path: str, clock: Clock, probe: Probe) -> Iterator[Result]:
    readers = ", ".join(f"{reader.name} ({reader.kind})" for reader in settings.readers)
    yield Result(True, f"config {path}", f"profile {settings.uplink.profile}, readers {readers}")
    for reader in settings.readers:
        problem = probe(reader)
        where = reader.path or "standard input"
        yield Result(
            problem is None, f"reader {reader.name}", problem or f"{where} opened and released"
        )
    yield from server(settings.uplink.url)
    yield state_directory(settings.storage.path.parent)
    yield clock_state(clock, settings.device.require_clock_sync)


def probe_reader(reader: Reader) -> str | None:
    """Open and release one reader as the daemon would; None when it works."""
    # Imported here: only `check` and the daemon need pyserial and evdev.
    from gateagent.readers import source_for  # noqa: PLC0415

    return source_for(reader).probe()


def server(url: str) -> Iterator[Result]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        yield Result(
            False, f"server DNS {host}", f"{exc.strerror}: check [uplink] url and the network"
        )
        return
    shown = sorted({str(address[4][0]) for address in addresses})
    yield Result(True, f"server DNS {host}", ", ".join(shown))
    try:
        connection = socket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        yield Result(
            False, f"server TCP {host}:{port}", f"{reason}: is the server up, the port right?"
        )
        return
    with connection:
        yield Result(True, f"server TCP {host}:{port}", "connected")
        if parts.scheme != "https":
            yield Result(True, "server TLS", "not used (http://): the token travels in clear text")
            return
        try:
            context = ssl.create_default_context()
            with context.wrap_socket(connection, server_hostname=host) as tls:
                version = tls.version()
        except (ssl.SSLError, OSError) as exc:
            yield Result(False, "server TLS", f"{exc}: is the clock right? the certificate?")
            return
        yield Result(True, "server TLS", f"{version}, certificate valid for {host}")


def state_directory(folder: Path) -> Result:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != folder:
        note = f"{folder} will be created (by systemd's StateDirectory=, or at start)"
        return Result(os.access(existing, os.W_OK) or os.geteuid() != 0, "state directory", note)
    if os.access(folder, os.W_OK):
        return Result(True, "state directory", f"{folder} is writable")
    return Result(False, "state directory", f"{folder} is not writable by this user")


def clock_state(clock: Clock, required: bool) -> Result:
    if clock.synchronized():
        return Result(True, "clock", "synchronized")
    if not required:
        return Result(True, "clock", "not synchronized; not required ([device] require_clock_sync)")
    return Result(
        False,
        "clock",
        "not synchronized: taps are held until it is (timedatectl; systemctl status "
        "systemd-timesyncd; is the NTP server reachable?)",
    )
