"""Runs INSIDE the test VM as root, with a real kernel's /dev/uinput: gateagent's HID
reader against a virtual USB keyboard-wedge reader. Then a real USB keyboard (a gadget
on dummy_hcd) read by `gateagent run`: the card typed on the gadget side is recorded,
and the reader's `feedback_led` reaches the gadget side as the keyboard's LED output
reports. Prints one `RESULT <name> PASS|FAIL <detail>` line per check and `DONE` at the
end; tests/system/test_hid_vm.py reads them from the VM's serial console.
"""

from __future__ import annotations

import itertools
import os
import queue
import resource
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
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
    """The card's key events in one write(2): a wedge types a card in a few ms, and in
    one call no stall of the emulated machine (the daemon starting beside this, a loaded
    host) can come between two keys and split the card past the reader's 200 ms gap."""
    events = []
    for code in [*(keys[char] for char in card), enter]:
        for value in (1, 0):
            events += [(e.EV_KEY, code, value), (e.EV_SYN, e.SYN_REPORT, 0)]
    # struct input_event: a struct timeval (uinput stamps its own time), type, code, value
    os.write(device.fd, b"".join(struct.pack("llHHi", 0, 0, *event) for event in events))


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
    usb = UsbGate()
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
    usb.check()
    print(f"DONE {'PASS' if all(results) else 'FAIL'}", flush=True)


# -- a real USB keyboard: a HID gadget on dummy_hcd, read by `gateagent run` -------------

GADGET = Path("/sys/kernel/config/usb_gadget/reader")
HIDG = "/dev/hidg0"  # the gadget side: input reports written, output reports read
USB_LINK = Path(
    "/dev/input/by-id/usb-Sycreader_RFID_Technology_Co._Ltd_SYC_ID_IC_USB_Reader_0001-event-kbd"
)
# The boot keyboard (HID 1.11 Appendix B.1, as in the kernel's gadget_hid.rst): an 8-byte
# input report (modifiers, reserved, six key usages) and a 1-byte output report whose
# bits are the LEDs (bit 0 Num Lock, 1 Caps Lock, 2 Scroll Lock, 3 Compose, 4 Kana).
BOOT_KEYBOARD = bytes.fromhex(
    "05 01 09 06 a1 01"  # Usage Page (Generic Desktop), Usage (Keyboard), Collection
    "05 07 19 e0 29 e7 15 00 25 01 75 01 95 08 81 02"  # 8 modifier bits (input)
    "95 01 75 08 81 03"  # a reserved byte (input)
    "95 05 75 01 05 08 19 01 29 05 91 02"  # 5 LED bits (output)
    "95 01 75 03 91 03"  # 3 bits of padding (output)
    "95 06 75 08 15 00 25 65 05 07 19 00 29 65 81 00"  # 6 key usages (input)
    "c0"  # End Collection
)
CAPS_LOCK = 0x02
# HID Usage Tables, Keyboard page: 1-9 are 0x1E-0x26, 0 is 0x27, Enter 0x28.
USAGES = {**{str(n): 0x1D + n for n in range(1, 10)}, "0": 0x27, "enter": 0x28}
CONFIG = """
[device]
name = "vm-gate"
timezone = "Asia/Jakarta"
require_clock_sync = false

[storage]
path = "/var/lib/gateagent/taps.db"

[uplink]
url = "http://127.0.0.1:9/attendance"
token = "not-a-real-token"
gate = 1

[metrics]
textfile = ""

[[readers]]
name = "gate"
kind = "hid"
path = "{path}"
feedback_led = "capslock"
"""


NETLINK_KOBJECT_UEVENT = 15  # linux/netlink.h (the socket module does not name it)


def link_usb_keyboard(events: socket.socket, linked: threading.Event) -> None:
    """What udev does on a Pi, for the life of the VM: the by-id link made when the host
    side adds the keyboard's event node, and removed with it. A USB reset under a
    stalled emulator makes the node again, maybe under a new name; the link follows."""
    while True:
        message = events.recv(8192).decode(errors="replace").split("\0")
        fields = dict(item.split("=", 1) for item in message if "=" in item)
        name, action = fields.get("DEVNAME", ""), fields.get("ACTION")
        if not name.startswith("input/event") or "dummy_hcd" not in fields.get("DEVPATH", ""):
            continue
        print(f"uevent {action} {name}", flush=True)
        if action == "add":
            if USB_LINK.is_symlink():
                USB_LINK.unlink()
            USB_LINK.symlink_to(f"/dev/{name}")
            linked.set()
        elif action == "remove" and USB_LINK.is_symlink():
            USB_LINK.unlink()


def plug_usb_keyboard() -> Path:
    """The gadget configured through configfs and attached to dummy_hcd's UDC: the host
    side (usbhid, hid-generic) makes it an input device; its event node, by-id linked."""
    events = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    events.bind((0, 1))  # group 1: the kernel's own uevents, what udev hears
    linked = threading.Event()
    USB_LINK.parent.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=link_usb_keyboard, args=(events, linked), daemon=True).start()

    def write(name: str, value: str | bytes) -> None:
        (GADGET / name).write_bytes(value if isinstance(value, bytes) else value.encode())

    for folder in ("strings/0x409", "functions/hid.usb0", "configs/c.1"):
        (GADGET / folder).mkdir(parents=True)
    write("idVendor", "0xffff")
    write("idProduct", "0x0035")
    write("strings/0x409/manufacturer", "Sycreader RFID Technology Co., Ltd")
    write("strings/0x409/product", "SYC ID&IC USB Reader")
    write("strings/0x409/serialnumber", "0001")
    write("functions/hid.usb0/protocol", "1")  # keyboard
    write("functions/hid.usb0/subclass", "1")  # boot interface
    write("functions/hid.usb0/report_length", "8")
    write("functions/hid.usb0/report_desc", BOOT_KEYBOARD)
    (GADGET / "configs/c.1/hid.usb0").symlink_to(GADGET / "functions/hid.usb0")
    write("UDC", os.listdir("/sys/class/udc")[0])
    if not linked.wait(60):
        raise RuntimeError("the USB keyboard gadget made no input device in 60 s")
    return USB_LINK


def output_reports(fd: int, reports: queue.Queue[tuple[float, int]]) -> None:
    """The gadget side's output reports as they come, with when (a daemon thread)."""
    while True:
        report = os.read(fd, 8)
        reports.put((time.monotonic(), report[0]))


def lines_of(stream: Iterator[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        print(f"gateagent: {line.rstrip()}", flush=True)
        lines.put(line)


def first_line(lines: queue.Queue[str], *texts: str, timeout_s: float = 120.0) -> str | None:
    """The first of `texts` a line comes with; None on timeout."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        for text in texts:
            if text in line:
                return text
    return None


def wait_lines(lines: queue.Queue[str], *texts: str, timeout_s: float = 120.0) -> bool:
    """Until a line with each of `texts` has come, in any order; False on timeout."""
    missing = list(texts)
    deadline = time.monotonic() + timeout_s
    while missing and (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        missing = [text for text in missing if text not in line]
    return not missing


class UsbGate:
    """`gateagent run` reading the USB keyboard gadget, with `feedback_led = "capslock"`.

    Started first, so that the daemon's start (its imports take many seconds under
    emulation) overlaps the uinput checks; checked after them.
    """

    def __init__(self) -> None:
        self.link = plug_usb_keyboard()
        self.gadget = os.open(HIDG, os.O_RDWR)
        self.reports: queue.Queue[tuple[float, int]] = queue.Queue()
        reports = threading.Thread(target=output_reports, args=(self.gadget, self.reports))
        reports.daemon = True
        reports.start()
        config = Path("/etc/gateagent/config.toml")
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(CONFIG.format(path=self.link))
        self.started = time.monotonic()
        self.daemon = subprocess.Popen(
            ["/opt/venv/bin/gateagent", "run", "--config", str(config)],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.daemon.stderr is not None
        self.lines: queue.Queue[str] = queue.Queue()
        reading = threading.Thread(target=lines_of, args=(self.daemon.stderr, self.lines))
        reading.daemon = True
        reading.start()

    def type(self, keys: list[str]) -> None:
        """Keys typed on the gadget side: an input report with the key down, then none."""
        for key in keys:
            os.write(self.gadget, bytes([0, 0, USAGES[key], 0, 0, 0, 0, 0]))
            os.write(self.gadget, bytes(8))

    def caps_lock(self, count: int, quiet_s: float = 30.0) -> list[tuple[float, bool]]:
        """The next `count` output reports, or those before a pause of `quiet_s`: when,
        and the Caps Lock bit."""
        seen: list[tuple[float, bool]] = []
        while len(seen) < count:
            try:
                at, bits = self.reports.get(timeout=quiet_s if seen else 30.0)
            except queue.Empty:
                break
            seen.append((at, bool(bits & CAPS_LOCK)))
        return seen

    def present(self, card: str, tries: int = 3) -> int | None:
        """Type `card` until the daemon records it whole; the tries it took, or None.

        A stall of the emulated machine (a loaded host) can spoil a try two ways. One
        key held back past the reader's 200 ms gap: the card arrives split, its first
        part dropped as a partial read (logged), as a real reader's card moved away too
        soon. Or the reader's thread not reading while the card arrives: a card is 66
        evdev events (MSC_SCAN, the key, SYN for each key down and up), more than a
        client's buffer of 64, and the kernel drops them for a SYN_DROPPED (logged as a
        read dropped, reason=events-dropped). Then, as a person would, the card is
        presented again once the LED has played out what the pieces gave.
        """
        recorded = f"tap recorded card_no={card} reader=gate"
        for attempt in range(1, tries + 1):
            self.type([*card, "enter"])
            got = first_line(self.lines, recorded, "read dropped: ", timeout_s=30.0)
            if got == recorded:
                return attempt
            self.caps_lock(count=100, quiet_s=3.0)  # longer than any pattern's step
        return None

    def check(self) -> None:
        device = evdev.InputDevice(str(self.link))
        leds = device.capabilities().get(e.EV_LED, [])
        result("usb-keyboard", e.LED_CAPSL in leds, f"{device.name} {device.phys} leds={leds}")
        device.close()
        ready = wait_lines(self.lines, "gateagent started", "reader connected reader=gate")
        result("usb-daemon-started", ready, f"after {time.monotonic() - self.started:.1f} s")
        if not ready:  # the checks below would only wait out their timeouts
            self.daemon.kill()
            return
        # Whatever the host set while the keyboard was new (the console's LEDs) is past.
        while not self.reports.empty():
            self.reports.get()

        tries = self.present("0012822001")
        result("usb-card-recorded", tries is not None, f"tries={tries}")
        seen = self.caps_lock(2)
        lit_s = seen[1][0] - seen[0][0] if len(seen) == 2 else 0.0
        # The recorded pattern keeps it lit 1 s (a 0.1 s beep, 0.9 s more), then off; the
        # two reports' trips through the emulated USB may differ by a fraction of that.
        result(
            "usb-led-recorded",
            [on for _, on in seen] == [True, False] and lit_s >= 0.5,
            f"caps_lock={[on for _, on in seen]} lit_s={lit_s:.2f}",
        )

        self.type([*"123"])  # no Enter: a partial read, dropped after the 200 ms gap
        dropped = wait_lines(self.lines, "read dropped: garbage reader=gate reason=timeout")
        seen = self.caps_lock(6, quiet_s=3.0)
        states = [on for _, on in seen]
        gaps = [f"{b[0] - a[0]:.2f}" for a, b in itertools.pairwise(seen)]
        # Three blinks 50 ms apart. The kernel sends the LED state when its work runs
        # (hid-input's led_work), so under a stall two changes can merge into one report:
        # lit first, off last, alternating, one to three blinks.
        blinks = states.count(True)
        result(
            "usb-led-unreadable",
            dropped and states == [True, False] * blinks and 1 <= blinks <= 3,
            f"caps_lock={states} gaps_s={gaps}",
        )

        self.daemon.send_signal(signal.SIGTERM)
        try:
            stopped = self.daemon.wait(60) == 0
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            stopped = False
        result("usb-daemon-stopped", stopped)
        os.close(self.gadget)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
