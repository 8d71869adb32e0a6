"""`gateagent check`: is this gate ready? One line per check, OK or FAIL and what to do.

It validates the configuration, opens and releases each reader, reaches the server as
the daemon will (the same proxy, the same TLS trust and client certificate, from
`network.py` and `uplink/http.py`): the proxy, DNS, TCP and TLS when it goes direct, and
a harmless GET of `[uplink] url` (never a POST of a tap: that would create an
attendance record). Then the state directory and the clock. Exit status 0 only when
every check passes; a warning (WARN) does not fail it.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateagent import network
from gateagent.clock import Clock
from gateagent.config import Config, Reader, Uplink, clear_text_token_warning

NETWORK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Result:
    ok: bool
    what: str
    detail: str
    warning: bool = False  # passes, but a person should know

    def line(self) -> str:
        mark = "FAIL" if not self.ok else "WARN" if self.warning else "OK  "
        return f"{mark}  {self.what}: {self.detail}"


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
    yield from feedback_outputs(settings)
    yield from server(settings.uplink, settings.device.name)
    yield state_directory(settings.storage.path.parent)
    yield clock_state(clock, settings.device.require_clock_sync)


def probe_reader(reader: Reader) -> str | None:
    """Open and release one reader as the daemon would; None when it works."""
    # Imported here: only `check` and the daemon need pyserial and evdev.
    from gateagent.readers import source_for  # noqa: PLC0415

    return source_for(reader).probe()


def feedback_outputs(settings: Config) -> Iterator[Result]:
    """Each configured feedback output beeps and blinks once (README "Feedback at the gate")."""
    wanted = settings.feedback
    if not (
        wanted.pins() or wanted.command or any(r.feedback_led != "none" for r in settings.readers)
    ):
        return
    # Imported here: gpiozero only when an output is configured.
    from gateagent.feedback import check_outputs  # noqa: PLC0415

    for what, problem in check_outputs(settings):
        done = "ran (FEEDBACK_OUTCOME=recorded)" if " command " in what else "beeped and blinked"
        yield Result(problem is None, what, problem or done)


def server(uplink: Uplink, device: str = "") -> Iterator[Result]:
    url = uplink.url
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = network.proxy_for(url, uplink.proxy)
    if proxy is not None:
        problem = network.proxy_problem(proxy.url)
        yield Result(problem is None, "server proxy", problem or f"{proxy.shown} ({proxy.source})")
        if problem is not None:
            return
    else:
        yield Result(True, "server proxy", "none: direct (no [uplink] proxy, no HTTPS_PROXY)")
        for result in _direct(uplink, host, port):
            yield result
            if not result.ok:
                return  # the step that fails is the one to fix
    if (warning := clear_text_token_warning(uplink)) is not None:
        yield Result(True, "server TLS", warning, warning=True)
    # Imported here: httpx only when the checks get this far.
    from gateagent.uplink import http  # noqa: PLC0415

    found = http.probe(uplink, device=device)
    yield Result(found.ok, f"server HTTP GET {url}", found.detail)


def _direct(uplink: Uplink, host: str, port: int) -> Iterator[Result]:
    """DNS, TCP and TLS one step at a time, to say which one fails."""
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
        if urlsplit(uplink.url).scheme != "https":
            if clear_text_token_warning(uplink) is None:
                yield Result(True, "server TLS", "not used (http:// to this machine)")
            return
        trust = network.trust_name(uplink.ca_file)
        try:
            context = network.tls_context(uplink.ca_file, uplink.cert_file, uplink.key_file)
            with context.wrap_socket(connection, server_hostname=host) as tls:
                version = tls.version()
        except (ssl.SSLError, OSError) as exc:
            yield Result(
                False,
                "server TLS",
                f"{exc} (trusted: {trust}): set [uplink] ca_file to the school's CA; is the"
                " clock right?",
            )
            return
        yield Result(True, "server TLS", f"{version}, certificate valid for {host} ({trust})")


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
