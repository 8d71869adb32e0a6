"""Programs from Debian's packages that tests run for real, installed when missing
(not part of the package).

On a machine without them (a bare Debian, a CI container) the tests install them with
apt-get as root; where that cannot be done (not root, no apt-get, no way to the mirror)
the tests that need them are skipped with the reason, never failed (issue 13).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

_lock = threading.Lock()
# Packages that apt-get could not install, and why: asked once per session, since every
# further attempt costs the same minute of timeouts against an unreachable mirror.
_refused: dict[tuple[str, ...], str] = {}
APT_UPDATE_S = 600
APT_INSTALL_S = 900


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
    for step in (install, ["apt-get", "update", "-qq"], install):
        timeout = APT_UPDATE_S if step[1] == "update" else APT_INSTALL_S
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            said.append(f"`{' '.join(step[:2])}` did not finish in {timeout} s")
            continue
        said.extend(_complaints(done.stderr))
        # A fresh machine has no package lists yet (or stale ones): update, then retry.
        if step is install and done.returncode == 0:
            return ""
    names = ", ".join(packages)
    # The first complaints say why (the mirror, a missing package); the last repeat them.
    why = "; ".join(dict.fromkeys(said)) or "apt-get failed and said nothing"
    return f"could not install {names} with apt-get: {why[:400]}"


def _complaints(stderr: str) -> list[str]:
    """apt-get's first error or failed download, without the noise around it."""
    lines = [line.strip() for line in stderr.splitlines()]
    return [
        " ".join(line.split())
        for line in lines
        if line.startswith("E:") or (line.startswith("W:") and "Failed to fetch" in line)
    ][:1]
