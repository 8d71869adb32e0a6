"""`gateagent listen` with a pseudo-terminal as the serial reader."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tty
from pathlib import Path

from gateagent.listen import describe
from tests import secrets_sweep
from tests.running import command
from tests.settings import make_settings, write_config


def frame(card: str) -> bytes:
    data = bytes.fromhex(card)
    checksum = 0
    for byte in data:
        checksum ^= byte
    return b"\x02" + card.encode() + f"{checksum:02X}".encode() + b"\x03"


def test_describe_shows_every_format_and_marks_the_configured_one() -> None:
    assert describe("entrance", "0A00C3A5F1", "dec10", False) == "\n".join(
        [
            "entrance: read '0A00C3A5F1'",
            "  as-read      0A00C3A5F1",
            "  dec10        0012822001   <- card_format now",
            "  wiegand26    195,42481",
            "  hex          0A00C3A5F1",
            "  strip-zeros  12822001",
        ]
    )
    assert "(not a card number: all-zero)" in describe("x", "0000", "as-read", False)


def test_listen_prints_cards_and_records_nothing(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    link.symlink_to(os.ttyname(slave))
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/x",
        taps={"card_format": "dec10"},
        readers=[{"name": "entrance", "kind": "serial", "path": str(link)}],
    )
    config = write_config(tmp_path / "config.toml", settings)
    listening = subprocess.Popen(
        [sys.executable, "-m", "gateagent", "listen", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stdout is not None
        assert listening.stdout.readline().startswith("listening on entrance (serial")
        assert listening.stdout.readline().strip() == "reader entrance: connected"
        os.write(master, frame("0A00C3A5F1"))
        lines = [listening.stdout.readline().rstrip("\n") for _ in range(7)]
        secrets_sweep.output("\n".join(lines))
        # The bytes as they came, then the read with the time in the gate's zone.
        assert lines[0] == "entrance: bytes " + frame("0A00C3A5F1").hex(" ")
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+07:00 entrance: read '0A00C3A5F1'", lines[1]
        )
        assert lines[3] == "  dec10        0012822001   <- card_format now"
        listening.send_signal(signal.SIGINT)
        assert listening.wait(20) == 0
    finally:
        listening.kill()
        listening.wait(10)
        for stream in (listening.stdout, listening.stderr):
            if stream is not None:
                secrets_sweep.output(stream.read())  # the rest, up to its exit
                stream.close()
        os.close(master)
        os.close(slave)
    assert not settings.storage.path.exists()  # nothing recorded


def test_listen_to_a_path_not_configured_yet(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    listening = subprocess.Popen(
        [sys.executable, "-m", "gateagent", "listen", "--path", os.ttyname(slave),
         "--protocol", "lines"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert listening.stdout is not None
        assert "(serial" in listening.stdout.readline()
        listening.stdout.readline()  # connected
        os.write(master, b"0012822001\r\n")
        name = os.ttyname(slave)
        assert listening.stdout.readline().strip() == f"{name}: bytes " + b"0012822001\r\n".hex(" ")
        assert listening.stdout.readline().strip().endswith(f" {name}: read '0012822001'")
        listening.send_signal(signal.SIGINT)
        assert listening.wait(20) == 0
    finally:
        listening.kill()
        listening.wait(10)
        if listening.stdout is not None:
            listening.stdout.close()
        os.close(master)
        os.close(slave)


def test_readers_command_runs(tmp_path: Path) -> None:
    done = command("readers")
    assert done.returncode == 0
    assert done.stdout.strip()


def test_listen_needs_no_uplink_section(tmp_path: Path) -> None:
    """Step 5 of the Pi walkthrough comes before the server is set up: listen sends
    nothing, so a file without [uplink] (or without its token) is enough."""
    master, slave = os.openpty()
    tty.setraw(slave)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[taps]\ncard_format = "dec10"\n\n[[readers]]\nname = "entrance"\nkind = "serial"\n'
        f'path = "{os.ttyname(slave)}"\nprotocol = "lines"\n'
    )
    listening = subprocess.Popen(
        [sys.executable, "-m", "gateagent", "listen", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stdout is not None
        assert listening.stdout.readline().startswith("listening on entrance (serial")
        assert listening.stdout.readline().strip() == "reader entrance: connected"
        os.write(master, b"0A00C3A5F1\r\n")
        assert listening.stdout.readline().startswith("entrance: bytes 30 41 30 30")
        assert listening.stdout.readline().rstrip("\n").endswith("entrance: read '0A00C3A5F1'")
        listening.send_signal(signal.SIGINT)
        assert listening.wait(20) == 0
    finally:
        listening.kill()
        _, err = listening.communicate(timeout=10)
        os.close(master)
        os.close(slave)
    assert err == ""


def test_listen_shows_the_bytes_of_a_reader_set_to_the_wrong_protocol(tmp_path: Path) -> None:
    """Issue 13: a `lines` reader configured as rdm6300 was silence in listen; now its
    bytes show as they come, and after a few seconds one warning says what to change."""
    master, slave = os.openpty()
    tty.setraw(slave)
    listening = subprocess.Popen(
        [sys.executable, "-m", "gateagent", "listen", "--path", os.ttyname(slave)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stdout is not None
        assert listening.stderr is not None
        listening.stdout.readline()  # listening on ...
        listening.stdout.readline()  # connected
        os.write(master, b"0012822001\r\n")
        # No read comes: the bytes are shown once the line has been quiet a moment.
        assert listening.stdout.readline() == (
            f"{os.ttyname(slave)}: bytes " + b"0012822001\r\n".hex(" ") + "\n"
        )
        warning = listening.stderr.readline()
        assert "WARNING bytes but no card frame" in warning
        assert warning.endswith('this looks like a `lines` reader: set protocol = "lines"\n')
        listening.send_signal(signal.SIGINT)
        assert listening.wait(20) == 0
    finally:
        listening.kill()
        listening.communicate(timeout=10)
        os.close(master)
        os.close(slave)
