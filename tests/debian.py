"""Programs from Debian's packages that tests run for real, installed when missing
(not part of the package).

On a machine without them (a bare Debian, a CI container) the tests install them with
apt-get as root; where that cannot be done (not root, no apt-get, no way to the mirror)
the tests that need them are skipped with the reason, never failed (issue 13).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from urllib.parse import urlsplit

import pytest

_lock = threading.Lock()
# Packages that apt-get could not install, and why: asked once per session, since every
# further attempt costs the same minute of timeouts against an unreachable mirror.
_refused: dict[tuple[str, ...], str] = {}
APT_UPDATE_S = 600
APT_INSTALL_S = 900
FAILED_FETCH = re.compile(r"[EW]: Failed to fetch (\S+) (.*)")


def program(name: str, package: str) -> str:
    """The path of `name`, installing `package` with apt-get first if it is missing;
    the calling test is skipped, saying why, where it cannot be installed."""
    reason = missing((name,), (package,))
    if reason:
        pytest.skip(reason)
    found = shutil.which(name)
    assert found is not None
    return found


def missing(commands: tuple[str, ...], packages: tuple[str, ...]) -> str | None:
    """None when every command is on PATH, after installing `packages` with apt-get if
    some are not; otherwise why they cannot be."""
    with _lock:
        if all(shutil.which(command) for command in commands):
            return None
        names = ", ".join(packages)
        lacking = ", ".join(command for command in commands if not shutil.which(command))
        if shutil.which("apt-get") is None:
            return f"{lacking} missing and there is no apt-get to install {names}"
        if os.geteuid() != 0:
            return f"{lacking} missing; installing {names} with apt-get needs root"
        if packages not in _refused:
            _refused[packages] = _install(packages)
        if all(shutil.which(command) for command in commands):
            return None
        if not _refused[packages]:
            # apt-get said it installed them: the test names the wrong package.
            pytest.fail(f"apt-get installed {names} but {lacking} is still missing")
        return _refused[packages]


def _install(packages: tuple[str, ...]) -> str:
    """Installs `packages`: "" when apt-get says it did, else its reason in one line."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    said: list[str] = []
    # A fresh machine has no package lists yet (or stale ones): update, then try again.
    for step in (install, ["apt-get", "update", "-qq"], install):
        timeout = APT_UPDATE_S if step[1] == "update" else APT_INSTALL_S
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            said.append(f"`{' '.join(step[:2])}` did not finish in {timeout} s")
            continue
        complaint = _complaint(done.stderr)
        if complaint:
            said.append(complaint)
        if step is install and done.returncode == 0:
            return ""
    names = ", ".join(packages)
    # Each step's first complaint, each said once: the mirror, a missing package.
    why = "; ".join(dict.fromkeys(said)) or "apt-get failed and said nothing"
    return f"could not install {names} with apt-get: {why}"


def _complaint(stderr: str) -> str | None:
    """apt-get's first error or failed download, in a few words: a failed download is
    named by its host, not by the URL of each package it could not fetch."""
    for raw in stderr.splitlines():
        line = " ".join(raw.split())
        fetch = FAILED_FETCH.match(line)
        if fetch:
            return f"cannot fetch from {urlsplit(fetch[1]).netloc}: {fetch[2]}"
        if line.startswith("E:"):
            return line
    return None
