"""Programs from Debian's packages that tests run for real, installed when missing
(not part of the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

_lock = threading.Lock()


def program(name: str, package: str) -> str:
    """The path of `name`, installing `package` with apt-get first if it is missing;
    the calling test is skipped, saying why, where apt-get cannot be used."""
    with _lock:
        found = shutil.which(name)
        if found:
            return found
        apt = shutil.which("apt-get")
        if apt is None:
            pytest.skip(f"{name} is missing and there is no apt-get to install {package}")
        if os.geteuid() != 0:
            pytest.skip(f"{name} is missing; installing {package} with apt-get needs root")
        install = [apt, "install", "-y", "--no-install-recommends", package]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            # A fresh machine has no package lists yet.
            subprocess.run([apt, "update"], capture_output=True, env=env, check=False)
            done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"apt-get install {package} did not give {name}:\n{done.stderr[-2000:]}")
        return found
