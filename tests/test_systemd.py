"""The unit file as systemd reads it: its settings, its security rating, `verify`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import debian

ROOT = Path(__file__).parents[1]
UNIT = ROOT / "systemd" / "gateagent.service"


@pytest.fixture
def analyze() -> str:
    return debian.program("systemd-analyze", "systemd")


def settings(path: Path = UNIT) -> dict[str, list[str]]:
    """key -> values in order (systemd allows a key more than once)."""
    found: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_follows_the_spec() -> None:
    unit = settings()
    assert unit["Type"] == ["notify"]
    assert unit["Restart"] == ["always"]
    assert unit["RestartSec"] == ["5s"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert unit["User"] == ["gateagent"]
    assert unit["StateDirectory"] == ["gateagent"]
    assert unit["LoadCredential"] == ["uplink-token:/etc/gateagent/token"]
    assert "WatchdogSec" in unit
    assert "PrivateDevices" not in unit  # readers are devices
    assert unit["DevicePolicy"] == ["closed"]
    assert "char-input rw" in unit["DeviceAllow"]
    assert "char-ttyUSB rw" in unit["DeviceAllow"]
    assert unit["ExecStart"][0].endswith("gateagent run --config /etc/gateagent/config.toml")
    # Neither the network nor time sync may delay reading taps.
    assert not any("network" in v or "time-sync" in v for v in unit.get("After", []))
    assert "Wants" not in unit


def test_sysusers_puts_the_user_in_the_reader_groups() -> None:
    lines = (ROOT / "systemd" / "gateagent.sysusers").read_text().splitlines()
    entries = [line.split()[:3] for line in lines if line and not line.startswith("#")]
    assert ["u", "gateagent", "-"] in entries
    assert ["m", "gateagent", "input"] in entries
    assert ["m", "gateagent", "dialout"] in entries


def test_security_rating_is_2_or_lower(analyze: str) -> None:
    done = subprocess.run(
        [analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match[1]) <= 2.0, done.stdout


def test_systemd_analyze_verify(tmp_path: Path, analyze: str) -> None:
    # verify wants ExecStart's program to exist: point it at this environment's.
    program = Path(sys.executable).with_name("gateagent")
    text = UNIT.read_text().replace("/opt/gateagent/venv/bin/gateagent", str(program))
    unit = tmp_path / "gateagent.service"
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Warnings about the unit (a typo'd value is "ignored" with exit status 0) name it.
    problems = [line for line in done.stderr.splitlines() if unit.name in line]
    assert done.returncode == 0, done.stderr
    assert not problems, done.stderr


def test_the_credential_is_the_token_file_beside_the_config() -> None:
    """config.py reads `token` beside the configuration when there is no
    $CREDENTIALS_DIRECTORY (a root shell): the same file the unit hands over."""
    from gateagent.config import CREDENTIAL_NAME, TOKEN_FILE_NAME

    unit = settings()
    config = unit["ExecStart"][0].split("--config ")[1].split()[0]
    assert unit["LoadCredential"] == [f"{CREDENTIAL_NAME}:{Path(config).parent / TOKEN_FILE_NAME}"]
