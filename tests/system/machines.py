"""What the system tests share: root file systems made with debootstrap, a wheelhouse,
and the tools they need, installed from Debian's packages when missing.

Everything made is cached in GATEAGENT_TEST_CACHE (default /var/cache/gateagent-tests),
so only the first run on a machine pays for debootstrap and downloads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests import debian

ROOT = Path(__file__).parents[2]
CACHE = Path(os.environ.get("GATEAGENT_TEST_CACHE", "/var/cache/gateagent-tests"))
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,python3-evdev,ca-certificates"
CHROOT_ENV = ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]


def tools_missing(*commands: str, packages: tuple[str, ...]) -> str | None:
    """None when `commands` can run; else installs `packages` with apt, or says why not."""
    if os.geteuid() != 0:
        return f"needs root ({', '.join(commands)})"
    return debian.missing(commands, packages)


def stamp() -> str:
    """Names cached things that depend on the project's dependencies."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]


def cached(name: str, make: Callable[[Path], None]) -> Path:
    """CACHE/name, made by `make(partial)` the first time (a crash leaves no half of it)."""
    done = CACHE / name
    if not done.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = CACHE / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        make(partial)
        partial.rename(done)
    return done


def base_root() -> Path:
    """A bare Debian 12 with systemd and Python, as Raspberry Pi OS Bookworm has them."""

    def make(partial: Path) -> None:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(partial)],
            capture_output=True,
            timeout=900,
            check=True,
        )

    return cached("bookworm-base", make)


def kernel_root() -> Path:
    """base_root() with Debian's kernel, for the VMs booted with qemu."""

    def make(partial: Path) -> None:
        copy_root(base_root(), partial)
        chroot(partial, "apt-get", "update", "-qq")
        chroot(partial, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
               "-qq", "--no-install-recommends", "linux-image-amd64", "kmod")  # fmt: skip

    return cached("bookworm-kernel", make)


def copy_root(source: Path, target: Path) -> None:
    subprocess.run(
        ["cp", "-a", "--reflink=auto", str(source), str(target)], check=True, timeout=300
    )


def chroot(root: Path, *command: str, timeout: float = 900) -> None:
    subprocess.run(
        ["chroot", str(root), *CHROOT_ENV, *command],
        capture_output=True,
        timeout=timeout,
        check=True,
    )


def wheelhouse(folder: Path, source: Path = ROOT) -> Path:
    """gateagent (from `source`, a checkout) and its dependencies as wheels in `folder`,
    for an offline install: the test machines do not trust this machine's way to the
    package registry, so pip runs out here (install.sh's GATEAGENT_WHEELS)."""
    wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "-w"]

    def dependencies(partial: Path) -> None:
        subprocess.run(
            [*wheel, str(partial), str(ROOT)], check=True, timeout=900, capture_output=True
        )
        for stale in partial.glob("gateagent-*.whl"):
            stale.unlink()

    shutil.copytree(cached(f"wheels-{stamp()}", dependencies), folder)
    subprocess.run(
        [*wheel, str(folder), "--no-deps", str(source)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return folder


def vm_root(root: Path, source: Path = ROOT) -> None:
    """At `root`: kernel_root() with gateagent (from `source`) installed from a wheelhouse
    into /opt/venv, which sees Debian's python3-evdev as a Pi's install does."""
    copy_root(kernel_root(), root)
    wheelhouse(root / "opt/wheels", source)
    chroot(root, "python3", "-m", "venv", "--system-site-packages", "/opt/venv")
    chroot(root, "/opt/venv/bin/python", "-m", "pip", "install", "--quiet", "--no-index",
           "--find-links", "/opt/wheels", "gateagent")  # fmt: skip
