"""`gateagent check` against real parts: a real server, a pseudo-terminal reader, files."""

from __future__ import annotations

import http.server
import os
import shutil
import ssl
import subprocess
import sys
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateagent.check import clock_state, server, state_directory
from gateagent.simulator import Simulator
from tests import secrets_sweep
from tests.fakes import FakeClock
from tests.running import command
from tests.settings import TOKEN, make_settings, write_config


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN) as simulator:
        yield simulator


@pytest.fixture
def pty_path(tmp_path: Path) -> Iterator[Path]:
    """A serial reader that is plugged in: a pseudo-terminal behind a by-id style link."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    link.symlink_to(os.ttyname(slave))
    yield link
    os.close(master)
    os.close(slave)


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return command("check", "--config", str(config))


def test_everything_ready(tmp_path: Path, sim: Simulator, pty_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        sim.integration_url,
        readers=[
            {"name": "desk", "kind": "stdin"},
            {"name": "entrance", "kind": "serial", "path": str(pty_path)},
        ],
    )
    done = check(write_config(tmp_path / "config.toml", settings))
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout
    assert [line.split(":")[0] for line in lines] == [
        f"OK    config {tmp_path / 'config.toml'}",
        "OK    reader desk",
        "OK    reader entrance",
        "OK    server proxy",
        "OK    server DNS 127.0.0.1",
        "OK    server TCP 127.0.0.1",
        "OK    server TLS",
        f"OK    server HTTP GET {sim.integration_url.split(':')[0]}",
        "OK    state directory",
        "OK    clock",
    ]
    assert f"{pty_path} opened and released" in done.stdout
    # A GET, never a POST: that would create an attendance record.
    assert [r.status for r in sim.received] == [404]
    assert sim.accepted() == []
    assert "the server answers a GET with 404 Cannot GET" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_a_missing_reader_and_a_server_down_fail(tmp_path: Path, sim: Simulator) -> None:
    sim.down()
    missing = tmp_path / "usb-not-plugged"
    settings = make_settings(
        tmp_path,
        sim.integration_url,
        readers=[{"name": "entrance", "kind": "serial", "path": str(missing)}],
    )
    done = check(write_config(tmp_path / "config.toml", settings))
    assert done.returncode == 1
    assert f"FAIL  reader entrance: missing: {missing} is not there" in done.stdout
    assert "FAIL  server TCP 127.0.0.1" in done.stdout


def test_a_reader_held_by_another_program_is_busy(tmp_path: Path, pty_path: Path) -> None:
    import serial

    holder = serial.Serial(str(pty_path), exclusive=True)
    try:
        settings = make_settings(
            tmp_path,
            "http://127.0.0.1:9/x",
            readers=[{"name": "entrance", "kind": "serial", "path": str(pty_path)}],
        )
        done = check(write_config(tmp_path / "config.toml", settings))
    finally:
        holder.close()
    assert f"FAIL  reader entrance: busy: another program holds {pty_path}" in done.stdout


def test_bad_config_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[uplink]\nurl = 'nope'\n")
    done = check(config)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"gateagent: {config}: ")


def test_unknown_host() -> None:
    uplink = make_settings(Path("/nonexistent"), "https://gateagent-test.invalid/api").uplink
    [_, result] = list(server(uplink))
    assert not result.ok
    assert result.what == "server DNS gateagent-test.invalid"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_tls_with_an_untrusted_certificate_fails(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
         "-out", str(tmp_path / "cert.pem")],
        capture_output=True,
        check=True,
        timeout=60,
    )  # fmt: skip
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.handle_request, daemon=True)
    thread.start()
    try:
        # An address, not `localhost`: a minimal container may not resolve that name.
        url = f"https://127.0.0.1:{httpd.server_address[1]}/x"
        results = list(server(make_settings(tmp_path, url).uplink))
    finally:
        thread.join(10)
        httpd.server_close()
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[3].what == "server TLS"
    assert "CERTIFICATE_VERIFY_FAILED" in results[3].detail
    assert "set [uplink] ca_file" in results[3].detail


def test_state_directory(tmp_path: Path) -> None:
    assert state_directory(tmp_path).ok
    assert "will be created" in state_directory(tmp_path / "new" / "state").detail


def test_clock() -> None:
    clock = FakeClock(synced=True)
    assert clock_state(clock, required=True).ok
    clock.synced = False
    assert clock_state(clock, required=False).ok
    unsynced = clock_state(clock, required=True)
    assert not unsynced.ok
    assert "timedatectl" in unsynced.detail


def test_check_meets_what_the_daemon_meets_proxy_and_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trustme

    from tests.proxy import Proxy
    from tests.uplink.test_http import pem, send, tls_server

    ca = trustme.CA()
    with tls_server(ca, "127.0.0.1") as api, Proxy() as proxy:
        api.answer = lambda handler, server: send(handler, 404, '{"message": "Cannot GET /x"}')
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        trusted = make_settings(tmp_path, api.url(), uplink={"ca_file": str(pem(tmp_path, ca))})
        results = list(server(trusted.uplink))
        untrusted = list(server(make_settings(tmp_path, api.url()).uplink))
    assert [r.line() for r in results] == [
        f"OK    server proxy: {proxy.url} (HTTPS_PROXY)",
        f"OK    server HTTP GET {api.url()}: the server answers a GET with 404 Cannot GET /x",
    ]
    assert [r.ok for r in untrusted] == [True, False]
    assert untrusted[1].detail.startswith(
        "the server's certificate is not trusted: set [uplink] ca_file"
    )
    assert len(proxy.seen) == 2  # both went through the proxy, as the daemon's would


def test_check_warns_of_a_token_in_clear_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.proxy import Proxy

    with Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        url = "http://attendance.school.invalid/api/v1/attendances/integration"
        results = list(server(make_settings(tmp_path, url).uplink))
    assert results[1].line() == (
        "WARN  server TLS: the token travels in clear text over http:// to"
        " attendance.school.invalid: anyone on the network path can read it; use an"
        " https:// [uplink] url"
    )
    assert results[1].ok  # a warning does not fail the check
    assert not results[2].ok  # the proxy cannot reach a name that does not exist


def test_the_token_from_the_file_beside_the_config(tmp_path: Path, sim: Simulator) -> None:
    """README "Installing on a Pi", steps 2 and 6: the token in /etc/gateagent/token (the
    unit's LoadCredential=), then `gateagent check` in a root shell, no variable set."""
    settings = make_settings(tmp_path, sim.integration_url)
    config = write_config(tmp_path / "config.toml", settings)
    config.write_text("".join(f"{line}\n" for line in config.read_text().splitlines()
                              if not line.startswith("token =")))  # fmt: skip
    secrets_sweep.exempt(tmp_path / "token").write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    done = subprocess.run(
        [sys.executable, "-m", "gateagent", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    secrets_sweep.output(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("OK    server HTTP GET") for line in done.stdout.splitlines())
