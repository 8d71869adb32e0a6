"""The HID reader against a real kernel: a Debian kernel under qemu, whose /dev/uinput
makes a virtual USB keyboard-wedge reader (this machine's own kernel has none), and
whose dummy_hcd with a configfs HID gadget makes a real USB keyboard: `gateagent run`
records a card typed on its gadget side, and the reader's `feedback_led` (Caps Lock)
comes back to the gadget side as the keyboard's LED output reports, in the pattern of
each signal (recorded, unreadable).

The VM's root is Debian 12 with Debian's kernel and python3-evdev, and gateagent
installed from a wheelhouse into a venv; `tests/system/hid_in_vm.py` runs as its init
and reports over the serial console. Booted once, with TCG emulation; the root is
cached like the other system roots. Needs root, debootstrap and qemu-system-x86;
skipped with the reason elsewhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import secrets_sweep
from tests.system.machines import ROOT, tools_missing, vm_root

INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
modprobe -a evdev uinput
# A real USB keyboard, both its sides: dummy_hcd (host and gadget), the configfs HID
# function, and the host's HID drivers (no udev here loads them when the device comes).
modprobe -a dummy_hcd libcomposite usb_f_hid usbhid hid_generic
mount -t configfs none /sys/kernel/config
/opt/venv/bin/python /opt/hid_in_vm.py 2>&1
echo o > /proc/sysrq-trigger
sleep 30
"""


VM_S = 600
# What a failure shows of the console: the checks, the daemon's log and the USB keyboard's
# event nodes as they come and go.
SHOWN = re.compile(r"RESULT|gateagent: |uevent ")


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _tail(console: str) -> str:
    return "\n".join(line.strip() for line in console.splitlines()[-60:]) + "\n"


def test_hid_reader_on_a_real_uinput_device(tmp_path: Path) -> None:
    reason = tools_missing(
        "qemu-system-x86_64", "debootstrap", "mkfs.ext4",
        packages=("qemu-system-x86", "debootstrap", "e2fsprogs"),
    )  # fmt: skip
    if reason:
        pytest.skip(reason)
    root = tmp_path / "root"
    vm_root(root)
    shutil.copy(ROOT / "tests/system/hid_in_vm.py", root / "opt/hid_in_vm.py")
    (root / "opt/init.sh").write_text(INIT)
    (root / "opt/init.sh").chmod(0o755)
    # The machine this test built (a 2 GB image, 20 s to read): no token was ever put in it,
    # and what ran in it printed to the console, swept below.
    image = secrets_sweep.exempt(tmp_path / "vm.img")
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(root), str(image), "2G"], check=True, timeout=300
    )
    kernel = shutil.copy(next((root / "boot").glob("vmlinuz-*")), tmp_path / "vmlinuz")
    initrd = shutil.copy(next((root / "boot").glob("initrd.img-*")), tmp_path / "initrd.img")
    shutil.rmtree(root)
    try:
        done = subprocess.run(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-nographic", "-no-reboot",
             "-kernel", str(kernel), "-initrd", str(initrd),
             "-append", "root=/dev/vda rw console=ttyS0 init=/opt/init.sh quiet panic=-1",
             "-drive", f"file={image},format=raw,if=virtio"],
            capture_output=True, text=True, timeout=VM_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        # TimeoutExpired carries bytes whatever `text` says.
        out, err = _text(exc.stdout), _text(exc.stderr)
        secrets_sweep.output(out, err)
        pytest.fail(
            f"the VM did not power off in {VM_S} s (its init reports DONE, then powers off);"
            f" its console last said:\n{_tail(out)}{err[-2000:]}"
        )
    secrets_sweep.output(done.stdout, done.stderr)
    lines = [line.strip() for line in done.stdout.splitlines()]
    # The kernel may write to the same console: look for our words anywhere in a line.
    results = dict(re.findall(r"RESULT (\S+) (PASS|FAIL)", done.stdout))
    if not re.search(r"DONE (PASS|FAIL)", done.stdout):
        pytest.fail(
            f"the VM ended (qemu exit status {done.returncode}) before its init reported DONE"
            f" (no boot, a panic, or hid_in_vm.py crashed); its console last said:\n"
            f"{_tail(done.stdout)}{done.stderr[-2000:]}"
        )
    assert results == {
        name: "PASS"
        for name in (
            "connected", "digits", "keypad", "partial-read-dropped", "grabbed",
            "unplug-is-a-state", "no-busy-loop-while-unplugged", "replugged", "card-after-replug",
            "usb-keyboard", "usb-daemon-started", "usb-card-recorded", "usb-led-recorded",
            "usb-led-unreadable", "usb-daemon-stopped",
        )
    }, "\n".join(line for line in lines if SHOWN.search(line))  # fmt: skip
