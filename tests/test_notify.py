"""sd_notify(3) against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateagent.notify import Notifier

# sockaddr_un.sun_path holds 108 bytes; pytest's tmp_path can be longer on some hosts.
SUN_PATH_MAX = 107


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket, as systemd's, and its NOTIFY_SOCKET value (a path)."""
    directory = tmp_path
    spare: str | None = None
    if len(str(tmp_path / "notify")) > SUN_PATH_MAX:
        directory = Path(spare := tempfile.mkdtemp(prefix="ga-"))
    path = str(directory / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5.0)  # a safety net: every datagram is queued before sendto returns
    yield server, path
    server.close()
    if spare is not None:
        shutil.rmtree(spare)


@pytest.fixture
def abstract_systemd() -> Iterator[tuple[socket.socket, str]]:
    """The same in Linux's abstract namespace: NOTIFY_SOCKET=@name."""
    name = f"gateagent-test-{secrets.token_hex(8)}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5.0)
    yield server, "@" + name
    server.close()


def received(server: socket.socket) -> list[str]:
    """Every datagram queued on `server`, without waiting for more."""
    server.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(server.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        server.settimeout(5.0)
    return messages


def test_notifications_arrive_exactly(systemd: tuple[socket.socket, str]) -> None:
    server, path = systemd
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("pending=3 uplink=ok readers=2/2")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert received(server) == [
        "READY=1",
        "STATUS=pending=3 uplink=ok readers=2/2",
        "WATCHDOG=1",
        "STOPPING=1",
    ]
    notifier.close()


def test_abstract_socket(abstract_systemd: tuple[socket.socket, str]) -> None:
    server, address = abstract_systemd
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    notifier.ready()
    notifier.send(STATUS="starting", MAINPID=os.getpid())
    assert server.recv(4096) == b"READY=1"
    assert server.recv(4096) == f"STATUS=starting\nMAINPID={os.getpid()}".encode()
    notifier.close()


def test_status_is_sent_only_when_it_changes(systemd: tuple[socket.socket, str]) -> None:
    server, path = systemd
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    notifier.status("pending=0 uplink=ok")
    notifier.status("pending=0 uplink=ok")
    notifier.status("pending=1 uplink=retrying")
    notifier.status("pending=1 uplink=retrying")
    notifier.status("pending=0 uplink=ok")
    assert received(server) == [
        "STATUS=pending=0 uplink=ok",
        "STATUS=pending=1 uplink=retrying",
        "STATUS=pending=0 uplink=ok",
    ]
    notifier.close()


def test_status_is_one_line(systemd: tuple[socket.socket, str]) -> None:
    server, path = systemd
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    notifier.status("pending=3\nuplink=paused-auth\r\n")
    notifier.status("pending=3 uplink=paused-auth")  # the same line: not sent again
    assert received(server) == ["STATUS=pending=3 uplink=paused-auth"]
    notifier.close()


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
    ids=["usec", "own-pid", "other-pid", "bad-pid", "zero", "bad-usec", "unset"],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    environ: dict[str, str], interval_s: float | None
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify", **environ})
    assert notifier.watchdog_interval_s() == interval_s


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("pending=0") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval_s() is None


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest's clean_environ removed any NOTIFY_SOCKET of the machine running the tests.
    assert Notifier.from_environ().enabled is False
    monkeypatch.setenv("NOTIFY_SOCKET", "@gateagent-test-unbound")
    assert Notifier.from_environ().enabled is True


def test_unsupported_address_is_a_no_op() -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_vanished_socket_is_logged_once_and_never_raises(
    systemd: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, path = systemd
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.ready()
    server.close()
    os.unlink(path)  # systemd went away
    with caplog.at_level(logging.DEBUG, logger="gateagent.notify"):
        assert notifier.watchdog() is False
        assert notifier.status("pending=0") is False
        assert notifier.stopping() is False
    failures = [r for r in caplog.records if "notification failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG
    notifier.close()


def test_status_is_sent_again_after_a_failed_send(tmp_path: Path) -> None:
    path = str(tmp_path / "n")
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.status("pending=0") is False  # nobody listening yet
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5.0)
    try:
        assert notifier.status("pending=0") is True
        assert server.recv(4096) == b"STATUS=pending=0"
    finally:
        server.close()
        notifier.close()


def test_unbound_abstract_socket_never_raises() -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": f"@gateagent-test-{secrets.token_hex(8)}"})
    assert notifier.watchdog() is False
    notifier.close()


def test_a_full_queue_drops_the_message_instead_of_waiting(
    systemd: tuple[socket.socket, str],
) -> None:
    server, path = systemd
    notifier = Notifier(path)
    # Nobody reads: once the receiver's queue is full a send must fail at once (a
    # blocked or timed send would stall, or spin, the daemon's loop).
    results = [notifier.watchdog() for _ in range(5000)]
    notifier.close()
    assert results[0] is True
    assert results.count(False) > 0
    assert len(received(server)) == results.count(True)
