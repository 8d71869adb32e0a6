"""`gateagent readers`: the input devices and serial ports that look like card readers.

The technician pastes a stable link from this list into `[[readers]] path` (SPEC
"Configuration"): `/dev/input/by-id/...` or `/dev/serial/by-id/...` names the device,
`.../by-path/...` names the USB port it is plugged into, `/dev/serial0` is the Pi's UART.

A keyboard-wedge reader is a USB keyboard to the kernel, so any device with digit keys
and Enter is listed, real keyboards included: `gateagent listen` tells them apart.

`scan_inputs` and `scan_ports` read /dev (and, through evdev and pyserial, sysfs);
`render` is pure and holds every rule about what is shown. evdev is optional (only hid
readers need it, README "Quick start"): without it the serial ports are still listed,
with a line saying how to see the input devices too.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serial.tools import list_ports

from gateagent.core import keys
from gateagent.readers.base import EVDEV_MISSING

__all__ = ["InputInfo", "PortInfo", "main", "render", "scan_inputs", "scan_ports"]


@dataclass(frozen=True)
class InputInfo:
    """An input device with digit keys and Enter, or one that could not be opened."""

    path: str  # the node, /dev/input/eventN
    name: str = ""
    vid: int | None = None
    pid: int | None = None
    serial: str = ""  # evdev `uniq`: the USB serial number, empty on most cheap readers
    phys: str = ""
    by_id: tuple[str, ...] = ()
    by_path: tuple[str, ...] = ()
    problem: str | None = None  # why it could not be opened; then only links are known


@dataclass(frozen=True)
class PortInfo:
    """A USB serial port, or the UART behind /dev/serial0."""

    path: str  # the node, /dev/ttyUSB0
    name: str = ""
    vid: int | None = None
    pid: int | None = None
    serial: str = ""
    phys: str = ""  # the USB location, e.g. 1-1.3:1.0
    by_id: tuple[str, ...] = ()
    by_path: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # /dev/serial0, /dev/serial1


# USB vendor ids of the USB-UART chips that serial RFID modules (RDM6300, ID-12LA
# boards) are sold with; from the Linux drivers ftdi_sio, ch341, cp210x and pl2303.
USB_UART_CHIPS: Mapping[int, str] = {
    0x0403: "FTDI",
    0x1A86: "CH340 (WCH)",
    0x10C4: "CP210x (Silicon Labs)",
    0x067B: "PL2303 (Prolific)",
}

NO_PERMISSION = "no permission: input group"


class _Ids(Protocol):
    @property
    def vendor(self) -> int: ...

    @property
    def product(self) -> int: ...


class InputDevice(Protocol):
    """What discovery reads of `evdev.InputDevice`."""

    @property
    def name(self) -> str: ...

    @property
    def phys(self) -> str: ...

    @property
    def uniq(self) -> str: ...

    @property
    def info(self) -> _Ids: ...

    def capabilities(self) -> Mapping[int, Sequence[object]]: ...

    def close(self) -> None: ...


class SerialPort(Protocol):
    """What discovery reads of pyserial's `ListPortInfo`."""

    @property
    def device(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def product(self) -> str | None: ...

    @property
    def vid(self) -> int | None: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def serial_number(self) -> str | None: ...

    @property
    def location(self) -> str | None: ...


# linux/input-event-codes.h, as in core/keys.py, so that the rules need no evdev; the
# main block's digits are KEY_1..KEY_0 (2..11), the keypad's are 71..82.
EV_KEY = 1
_DIGITS = frozenset(code for code, char in keys.CHARS.items() if char.isdigit() and code < 64)
_KEYPAD_DIGITS = frozenset(code for code, char in keys.CHARS.items() if char.isdigit()) - _DIGITS
_ENTERS = keys.ENTERS


def looks_like_reader(keys: Iterable[object]) -> bool:
    """Digits (or keypad digits) and an Enter: what a keyboard-wedge reader types."""
    codes = set(keys)
    has_digits = codes.issuperset(_DIGITS) or codes.issuperset(_KEYPAD_DIGITS)
    return has_digits and not _ENTERS.isdisjoint(codes)


def scan_inputs(
    dev: Path = Path("/dev"),
    open_device: Callable[[str], InputDevice] | None = None,
) -> list[InputInfo]:
    """The input devices under `dev` that type digits and Enter, and the ones that
    could not be opened (with their links, which often name the device).

    Raises ImportError when `open_device` is not given and evdev is not installed."""
    if open_device is None:
        import evdev  # noqa: PLC0415 -- optional: only hid readers need it

        open_device = evdev.InputDevice
    by_id = _links(dev / "input" / "by-id")
    by_path = _links(dev / "input" / "by-path")
    found: list[InputInfo] = []
    for node in sorted(dev.glob("input/event*"), key=_node_order):
        real = os.path.realpath(node)
        ids, paths = by_id.get(real, ()), by_path.get(real, ())
        try:
            device = open_device(str(node))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENODEV):
                continue  # unplugged while we looked
            problem = (
                NO_PERMISSION
                if isinstance(exc, PermissionError)
                else f"cannot open: {exc.strerror or exc}"
            )
            found.append(InputInfo(str(node), by_id=ids, by_path=paths, problem=problem))
            continue
        try:
            codes = device.capabilities().get(EV_KEY, ())
            if looks_like_reader(codes):
                found.append(
                    InputInfo(
                        str(node),
                        name=device.name,
                        vid=device.info.vendor,
                        pid=device.info.product,
                        serial=device.uniq or "",
                        phys=device.phys or "",
                        by_id=ids,
                        by_path=paths,
                    )
                )
        finally:
            device.close()
    return found


def scan_ports(
    dev: Path = Path("/dev"),
    comports: Callable[[], Iterable[SerialPort]] = list_ports.comports,
) -> list[PortInfo]:
    """USB serial ports, and the UART that /dev/serial0 (or serial1) points at.

    Built-in ports without such an alias are left out: a PC lists ttyS0-ttyS31 whether
    or not anything is wired to them.
    """
    by_id = _links(dev / "serial" / "by-id")
    by_path = _links(dev / "serial" / "by-path")
    aliases: dict[str, tuple[str, ...]] = {}
    for alias in ("serial0", "serial1"):
        link = dev / alias
        if link.is_symlink() and link.exists():
            real = os.path.realpath(link)
            aliases[real] = (*aliases.get(real, ()), str(link))
    found: list[PortInfo] = []
    seen: set[str] = set()
    for port in sorted(comports(), key=lambda port: _node_order(Path(port.device))):
        real = os.path.realpath(port.device)
        if port.vid is None and real not in aliases:
            continue
        seen.add(real)
        found.append(
            PortInfo(
                port.device,
                name=port.product or (port.description if port.description != "n/a" else ""),
                vid=port.vid,
                pid=port.pid,
                serial=port.serial_number or "",
                phys=port.location or "",
                by_id=by_id.get(real, ()),
                by_path=by_path.get(real, ()),
                aliases=aliases.get(real, ()),
            )
        )
    # pyserial hides platform UARTs, which the Pi's mini UART (ttyS0) is.
    for real, names in sorted(aliases.items()):
        if real not in seen:
            found.append(PortInfo(real, aliases=names))
    return found


def _links(folder: Path) -> dict[str, tuple[str, ...]]:
    """Real node -> the symlinks in `folder` that point at it (udev's by-id, by-path)."""
    links: dict[str, tuple[str, ...]] = {}
    if not folder.is_dir():
        return links
    for link in sorted(folder.iterdir()):
        if link.is_symlink():
            real = os.path.realpath(link)
            links[real] = (*links.get(real, ()), str(link))
    return links


def _node_order(node: Path) -> tuple[str, int]:
    """event2 before event10, ttyUSB2 before ttyUSB10."""
    match = re.fullmatch(r"(.*?)(\d*)", node.name)
    assert match is not None  # the pattern matches any name
    prefix, number = match.groups()
    return prefix, int(number or -1)


# -- rendering ------------------------------------------------------------------------


def render(inputs: list[InputInfo], ports: list[PortInfo], *, evdev_missing: bool = False) -> str:
    """What `gateagent readers` prints for what the scans found."""
    readers = [info for info in inputs if info.problem is None]
    unopened = [info for info in inputs if info.problem is not None]
    out: list[str] = []
    if evdev_missing:
        out += [f"Input devices (hid readers) not listed: {EVDEV_MISSING}.", ""]
    if readers:
        out += _section('Input devices that type digits and Enter (kind = "hid"):', "hid", readers)
        out += [
            "",
            "Readers and keyboards look the same here: run `gateagent listen` and present a",
            "card to see which device reads it.",
        ]
    if ports:
        out += [""] if out else []
        out += _section('Serial ports (kind = "serial"):', "serial", ports)
    if unopened:
        out += [""] if out else []
        out.append(f"Input devices that could not be opened ({len(unopened)}):")
        for info in unopened:
            links = "  ".join(info.by_id or info.by_path)
            out.append(f"  {info.path}  {info.problem}" + (f"  {links}" if links else ""))
        if any(info.problem == NO_PERMISSION for info in unopened):
            out += [
                "A reader may be among them: add this user to the 'input' group",
                "(sudo usermod -aG input $USER, then log in again), or run"
                " `sudo gateagent readers`.",
            ]
    if not readers and not ports:
        out += [""] if out else []
        out += _NOTHING_FOUND
    return "\n".join(out) + "\n"


_NOTHING_FOUND = [
    "No card readers found. Check:",
    "  - the reader is plugged in: `lsusb` lists it, and",
    "    `ls -l /dev/input/by-id /dev/serial/by-id` shows its links;",
    "  - this user is in the 'input' group (USB keyboard-wedge readers) and the 'dialout'",
    "    group (serial readers): `id` shows the groups; add them with",
    "    `sudo usermod -aG input,dialout $USER`, then log in again;",
    "  - a reader wired to the Pi's GPIO UART needs the serial port enabled",
    "    (raspi-config, Interface Options, Serial Port: shell no, hardware yes),",
    "    then it is /dev/serial0.",
]


def _section(
    heading: str, kind: str, devices: Sequence[InputInfo] | Sequence[PortInfo]
) -> list[str]:
    groups = _shared_by_id(devices)
    shared = [device for group in groups for device in group]
    out = [heading]
    for device in devices:
        aliases = device.aliases if isinstance(device, PortInfo) else ()
        out += ["", f"  {device.path}  {_what(device)}"]
        if device.name:
            out.append(f"      name     {device.name}")
        if device.vid is not None and device.pid is not None:
            out.append(f"      vid:pid  {device.vid:04x}:{device.pid:04x}")
            out.append(f"      serial   {device.serial or '(none)'}")
        if device.phys:
            out.append(f"      phys     {device.phys}")
        out += [f"      by-id    {link}" for link in device.by_id]
        out += [f"      by-path  {link}" for link in device.by_path]
        out += [f"      alias    {link}" for link in aliases]
        if not (device.by_id or device.by_path or aliases):
            out.append("      (no stable link: this name can change after a reboot)")
        # A shared by-id link may point at the other device: the port's link is safe.
        stable = (*device.by_path, *device.by_id) if device in shared else device.by_id
        best = next(iter((*stable, *aliases, *device.by_path)), device.path)
        out.append(f'      config   kind = "{kind}"  path = "{best}"')
    for group in groups:
        out += [
            "",
            f"Warning: {len(group)} devices are the same model without a serial number, so",
            "their by-id link points at only one of them, and which one can change when they",
            "are replugged or the gate reboots. Use their by-path links, which name the USB",
            "port (keep each reader in its port):",
        ]
        out += [f"  {device.by_path[0] if device.by_path else device.path}" for device in group]
    return out


def _shared_by_id(
    devices: Sequence[InputInfo] | Sequence[PortInfo],
) -> list[list[InputInfo | PortInfo]]:
    """Groups of devices that share one by-id name.

    udev builds a by-id name from vendor, model and serial number
    (60-persistent-input.rules, 60-serial.rules); devices of one model without a serial
    number all get the same name, and the link points at whichever appeared last.
    """
    models: dict[tuple[str, int | None, int | None], list[InputInfo | PortInfo]] = {}
    for device in devices:
        if not device.serial:
            models.setdefault((device.name, device.vid, device.pid), []).append(device)
    return [group for group in models.values() if len(group) > 1]


def _what(device: InputInfo | PortInfo) -> str:
    if isinstance(device, InputInfo):
        return "keyboard (could be a reader)"
    if device.vid is None:
        return "built-in UART (a reader wired to the GPIO pins?)"
    chip = USB_UART_CHIPS.get(device.vid)
    if chip is not None:
        return f"USB-UART {chip}: likely a reader"
    return "USB serial device (could be a reader)"


def main() -> int:
    """`gateagent readers`: 0 even when nothing is found; the list is information."""
    try:
        inputs, missing = scan_inputs(), False
    except ImportError:
        inputs, missing = [], True
    print(render(inputs, scan_ports(), evdev_missing=missing), end="")
    return 0
