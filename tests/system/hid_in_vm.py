"""Runs INSIDE the test VM as root, with a real kernel's /dev/uinput: gateagent's HID
reader against a virtual USB keyboard-wedge reader. Prints one `RESULT <name> PASS|FAIL
<detail>` line per check and `DONE` at the end; tests/system/test_hid_vm.py reads them
from the VM's serial console.
"""

from __future__ import annotations

import os
import queue
import resource
import threading
import time
from pathlib import Path

import evdev
from evdev import UInput
from evdev import ecodes as e

from gateagent.readers.base import start
from gateagent.readers.hid import HidSource

LINK = Path("/dev/input/by-id/usb-Sycreader_RFID_Technology_Co._Ltd_SYC_ID_IC_USB_Reader-event-kbd")
DIGITS = {str(n): getattr(e, f"KEY_{n}") for n in range(10)}
KEYPAD = {str(n): getattr(e, f"KEY_KP{n}") for n in range(10)}
KEYS = [*DIGITS.values(), *KEYPAD.values(), e.KEY_ENTER, e.KEY_KPENTER, e.KEY_LEFTSHIFT,
        e.KEY_A, e.KEY_B, e.KEY_C, e.KEY_D, e.KEY_E, e.KEY_F]  # fmt: skip
results: list[bool] = []


def result(name: str, ok: bool, detail: str = "") -> None:
    results.append(ok)
    print(f"RESULT {name} {'PASS' if ok else 'FAIL'} {detail}".rstrip(), flush=True)


def plug() -> UInput:
    """A new virtual reader, and the by-id link pointing at it, as udev would make it."""
    name = "Sycreader RFID Technology Co., Ltd SYC ID&IC USB Reader"
    device = UInput({e.EV_KEY: KEYS}, name=name, vendor=0xFFFF, product=0x0035)
    LINK.parent.mkdir(parents=True, exist_ok=True)
    if LINK.is_symlink():
        LINK.unlink()
    LINK.symlink_to(device.device.path)
    return device


def press(device: UInput, code: int) -> None:
    device.write(e.EV_KEY, code, 1)
    device.syn()
    device.write(e.EV_KEY, code, 0)
    device.syn()


def type_card(
    device: UInput, card: str, keys: dict[str, int] = DIGITS, enter: int = e.KEY_ENTER
) -> None:
    for char in card:
        press(device, keys[char])
    press(device, enter)


def take(events: queue.Queue[tuple[str, object]], kind: str, timeout_s: float = 10.0) -> object:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            got_kind, value = events.get(timeout=left)
        except queue.Empty:
            break
        if got_kind == kind:
            return value
    return None


def main() -> None:
    events: queue.Queue[tuple[str, object]] = queue.Queue()
    stop = threading.Event()
    reader = plug()
    time.sleep(0.5)  # the kernel announces a new input device to its handlers
    source = HidSource("exit", str(LINK))
    start(
        source,
        lambda raw: events.put(("card", raw)),
        lambda ok, err: events.put(("health", (ok, err))),
        stop,
    )
    result("connected", take(events, "health") == (True, None))

    type_card(reader, "0012822001")
    result("digits", take(events, "card") == "0012822001")

    type_card(reader, "2430030533", KEYPAD, e.KEY_KPENTER)
    result("keypad", take(events, "card") == "2430030533")

    for char in "123":
        press(reader, DIGITS[char])
    time.sleep(0.4)  # longer than the 200 ms gap: the partial read is dropped
    type_card(reader, "0006762840")
    result("partial-read-dropped", take(events, "card") == "0006762840")

    # The grab: another reader of the same device (a console, say) gets nothing.
    other = evdev.InputDevice(str(LINK))
    type_card(reader, "0012822001")
    card = take(events, "card")
    time.sleep(0.3)
    try:
        leaked = [ev for ev in other.read() if ev.type == e.EV_KEY]
    except BlockingIOError:
        leaked = []
    other.close()
    result("grabbed", card == "0012822001" and not leaked, f"leaked={len(leaked)}")

    reader.close()  # unplug: the kernel removes the device
    LINK.unlink()
    health = take(events, "health")
    result("unplug-is-a-state", isinstance(health, tuple) and health[0] is False, repr(health))

    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # Under emulation everything is slow; a busy loop would still burn seconds here.
    result("no-busy-loop-while-unplugged", cpu_s < 1.0, f"cpu_s={cpu_s:.3f} over 5 s")

    reader = plug()
    result("replugged", take(events, "health") == (True, None))
    type_card(reader, "0012822001")
    result("card-after-replug", take(events, "card") == "0012822001")

    stop.set()
    reader.close()
    print(f"DONE {'PASS' if all(results) else 'FAIL'}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
