"""evdev is optional (issue 13): the quick start installs without a C compiler, and a
hid reader configured where evdev is missing says so in one line instead of a traceback.

"Without evdev" is a real `gateagent` subprocess in which `import evdev` fails as it does
where the module is not installed (`sys.modules["evdev"] = None`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateagent.readers.base import EVDEV_MISSING
from gateagent.simulator import Simulator
from tests import secrets_sweep
from tests.settings import TOKEN, make_settings, write_config

ROOT = Path(__file__).parents[1]
WITHOUT_EVDEV = (
    "import runpy, sys; sys.modules['evdev'] = None;"
    " runpy.run_module('gateagent', run_name='__main__')"
)


def without_evdev(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EVDEV, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    secrets_sweep.output(done.stdout, done.stderr)
    return done


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(token=TOKEN) as simulator:
        yield simulator


def test_evdev_is_an_extra_and_the_tests_use_the_prebuilt_wheel() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [dependency.split(">")[0].split("=")[0] for dependency in project["dependencies"]]
    assert "evdev" not in names
    assert project["optional-dependencies"]["hid"] == ["evdev>=1.6"]
    assert "evdev-binary>=1.6" in project["optional-dependencies"]["test"]


def test_check_names_the_missing_module_for_a_hid_reader(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(
        tmp_path,
        sim.integration_url,
        readers=[{"name": "exit", "kind": "hid", "path": "/dev/input/by-id/usb-reader-kbd"}],
    )
    done = without_evdev("check", "--config", str(write_config(tmp_path / "config.toml", settings)))
    assert done.returncode == 1, done.stderr
    assert f"FAIL  reader exit: {EVDEV_MISSING}" in done.stdout.splitlines()
    assert "Traceback" not in done.stderr


def test_listen_shows_the_hid_reader_state(tmp_path: Path) -> None:
    listening = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_EVDEV, "listen", "--path", "/dev/input/event7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listening.stdout is not None
        assert listening.stdout.readline().startswith("listening on")
        assert listening.stdout.readline() == f"reader event7: not connected: {EVDEV_MISSING}\n"
    finally:
        listening.send_signal(signal.SIGINT)
        _, err = listening.communicate(timeout=20)
    assert listening.returncode == 0
    assert "Traceback" not in err


def test_readers_lists_serial_ports_and_says_why_no_input_devices() -> None:
    done = without_evdev("readers")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Input devices (hid readers) not listed: {EVDEV_MISSING}.\n")


def test_a_quiet_install_prints_no_build_warnings(tmp_path: Path) -> None:
    """`./dev` installs with --quiet: setuptools must not warn about our packaging (an
    editable install of a top-level package used its import finder, which warns)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--ignore-installed", "--prefix", str(tmp_path / "prefix"), "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 and "No matching distribution found for setuptools" in done.stderr:
        pytest.skip("no package index for pip's build environment (setuptools)")
    assert done.returncode == 0, done.stderr
    for marker in ("BuildBackendWarning", "SetuptoolsDeprecationWarning", "InformationOnly"):
        assert marker not in done.stderr, done.stderr
