"""`gateagent readers`: what is listed, the shared by-id warning, and the scans.

This machine has no /dev/input, so the scans run over a fake dev tree in tmp_path
(udev-style symlinks to plain files) with the evdev open behind its seam; serial ports
come from real pyserial `ListPortInfo` objects.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from evdev import ecodes
from serial.tools.list_ports_common import ListPortInfo

from gateagent.readers import discover
from gateagent.readers.discover import InputInfo, PortInfo, render, scan_inputs, scan_ports

SYC_ID = (
    "/dev/input/by-id/"
    "usb-Sycreader_RFID_Technology_Co._Ltd_SYC_ID_IC_USB_Reader_08FF20140315-event-kbd"
)
SYC_PATH = "/dev/input/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.1:1.0-event-kbd"
CHEAP_ID = "/dev/input/by-id/usb-IC_Reader_IC_Reader-event-kbd"
CHEAP_PATH_2 = "/dev/input/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.2:1.0-event-kbd"
CHEAP_PATH_3 = "/dev/input/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.3:1.0-event-kbd"
FTDI_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
FTDI_PATH = "/dev/serial/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.4:1.0-port0"

SYC = InputInfo(
    "/dev/input/event3",
    name="Sycreader RFID Technology Co., Ltd SYC ID&IC USB Reader",
    vid=0xFFFF,
    pid=0x0035,
    serial="08FF20140315",
    phys="usb-0000:01:00.0-1.1/input0",
    by_id=(SYC_ID,),
    by_path=(SYC_PATH,),
)
# Two of the same cheap reader, no serial number: udev made one by-id link, for the
# one that appeared last.
CHEAP_2 = InputInfo(
    "/dev/input/event4",
    name="IC Reader IC Reader",
    vid=0x08FF,
    pid=0x0009,
    phys="usb-0000:01:00.0-1.2/input0",
    by_path=(CHEAP_PATH_2,),
)
CHEAP_3 = InputInfo(
    "/dev/input/event5",
    name="IC Reader IC Reader",
    vid=0x08FF,
    pid=0x0009,
    phys="usb-0000:01:00.0-1.3/input0",
    by_id=(CHEAP_ID,),
    by_path=(CHEAP_PATH_3,),
)
FTDI = PortInfo(
    "/dev/ttyUSB0",
    name="FT232R USB UART",
    vid=0x0403,
    pid=0x6001,
    serial="A50285BI",
    phys="1-1.4:1.0",
    by_id=(FTDI_ID,),
    by_path=(FTDI_PATH,),
)


def test_one_reader_with_a_serial_number() -> None:
    assert render([SYC], []) == (
        'Input devices that type digits and Enter (kind = "hid"):\n'
        "\n"
        "  /dev/input/event3  keyboard (could be a reader)\n"
        "      name     Sycreader RFID Technology Co., Ltd SYC ID&IC USB Reader\n"
        "      vid:pid  ffff:0035\n"
        "      serial   08FF20140315\n"
        "      phys     usb-0000:01:00.0-1.1/input0\n"
        f"      by-id    {SYC_ID}\n"
        f"      by-path  {SYC_PATH}\n"
        f'      config   kind = "hid"  path = "{SYC_ID}"\n'
        "\n"
        "Readers and keyboards look the same here: run `gateagent listen` and present a\n"
        "card to see which device reads it.\n"
    )


def test_two_identical_readers_without_serial_get_by_path_links() -> None:
    out = render([SYC, CHEAP_2, CHEAP_3], [])
    warning = out[out.index("Warning: ") :]
    assert warning.startswith("Warning: 2 devices are the same model without a serial number")
    assert f"  {CHEAP_PATH_2}\n  {CHEAP_PATH_3}\n" in warning
    assert SYC_PATH not in warning
    # Each config line names its own port, never the by-id link they would share.
    assert f'config   kind = "hid"  path = "{CHEAP_PATH_2}"' in out
    assert f'config   kind = "hid"  path = "{CHEAP_PATH_3}"' in out
    assert f'path = "{CHEAP_ID}"' not in out
    assert f'path = "{SYC_ID}"' in out
    assert "      serial   (none)\n" in out


def test_a_serial_ftdi_port() -> None:
    assert render([], [FTDI]) == (
        'Serial ports (kind = "serial"):\n'
        "\n"
        "  /dev/ttyUSB0  USB-UART FTDI: likely a reader\n"
        "      name     FT232R USB UART\n"
        "      vid:pid  0403:6001\n"
        "      serial   A50285BI\n"
        "      phys     1-1.4:1.0\n"
        f"      by-id    {FTDI_ID}\n"
        f"      by-path  {FTDI_PATH}\n"
        f'      config   kind = "serial"  path = "{FTDI_ID}"\n'
    )


def test_the_pi_uart_is_named_by_its_alias() -> None:
    out = render([], [PortInfo("/dev/ttyS0", aliases=("/dev/serial0",))])
    assert "  /dev/ttyS0  built-in UART (a reader wired to the GPIO pins?)\n" in out
    assert 'config   kind = "serial"  path = "/dev/serial0"' in out


def test_nothing_found_says_what_to_check() -> None:
    out = render([], [])
    assert out.startswith("No card readers found. Check:\n")
    for hint in ("plugged in", "ls -l /dev/input/by-id", "'input' group", "'dialout'"):
        assert hint in out


def test_devices_without_permission_are_noted() -> None:
    denied = InputInfo("/dev/input/event7", by_id=(SYC_ID,), problem=discover.NO_PERMISSION)
    out = render([denied], [])
    assert f"  /dev/input/event7  no permission: input group  {SYC_ID}\n" in out
    assert "sudo usermod -aG input $USER" in out
    assert "No card readers found." in out


# -- scans ---------------------------------------------------------------------------

KEYBOARD = [*range(ecodes.KEY_ESC, ecodes.KEY_KPDOT + 1), ecodes.KEY_KPENTER]


class Ids(NamedTuple):
    vendor: int
    product: int


class FakeInput:
    """The fields of `evdev.InputDevice` that discovery reads."""

    def __init__(self, name: str, keys: list[int], uniq: str = "") -> None:
        self.name = name
        self.phys = "usb-0000:01:00.0-1.2/input0"
        self.uniq = uniq
        self.info = Ids(0x08FF, 0x0009)
        self._keys = keys
        self.closed = False

    def capabilities(self) -> Mapping[int, Sequence[object]]:
        return {ecodes.EV_SYN: [0, 1, 4], ecodes.EV_KEY: self._keys}

    def close(self) -> None:
        self.closed = True


def make_dev(tmp_path: Path, nodes: list[str], links: dict[str, str]) -> Path:
    """A dev tree: plain files for the nodes, relative symlinks as udev makes them."""
    for node in nodes:
        (tmp_path / node).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / node).touch()
    for link, target in links.items():
        (tmp_path / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(tmp_path / target, (tmp_path / link).parent), tmp_path / link)
    return tmp_path


def test_scan_inputs(tmp_path: Path) -> None:
    dev = make_dev(
        tmp_path,
        ["input/event0", "input/event2", "input/event10", "input/event11", "input/mice"],
        {
            "input/by-id/usb-IC_Reader_IC_Reader-event-kbd": "input/event10",
            "input/by-path/pci-0000:01:00.0-usb-0:1.2:1.0-event-kbd": "input/event10",
            "input/by-path/pci-0000:01:00.0-usb-0:1.3:1.0-event-mouse": "input/event11",
            "input/by-id/usb-Other_Reader-event-kbd": "input/event2",
        },
    )
    opened: list[FakeInput] = []

    def open_device(path: str) -> FakeInput:
        name = Path(path).name
        if name == "event2":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        device = {
            "event0": FakeInput("Power Button", [ecodes.KEY_POWER]),
            "event10": FakeInput("IC Reader IC Reader", KEYBOARD, uniq="42"),
            "event11": FakeInput("USB Mouse", [ecodes.BTN_LEFT, ecodes.BTN_RIGHT]),
        }[name]
        opened.append(device)
        return device

    found = scan_inputs(dev, open_device=open_device)

    assert found == [
        InputInfo(
            str(dev / "input/event2"),
            by_id=(str(dev / "input/by-id/usb-Other_Reader-event-kbd"),),
            problem="no permission: input group",
        ),
        InputInfo(
            str(dev / "input/event10"),
            name="IC Reader IC Reader",
            vid=0x08FF,
            pid=0x0009,
            serial="42",
            phys="usb-0000:01:00.0-1.2/input0",
            by_id=(str(dev / "input/by-id/usb-IC_Reader_IC_Reader-event-kbd"),),
            by_path=(str(dev / "input/by-path/pci-0000:01:00.0-usb-0:1.2:1.0-event-kbd"),),
        ),
    ]
    assert len(opened) == 3
    assert all(device.closed for device in opened)
    assert "no permission: input group" in render(found, [])


def test_scan_inputs_keypad_only_reader(tmp_path: Path) -> None:
    dev = make_dev(tmp_path, ["input/event0"], {})
    keypad = [getattr(ecodes, f"KEY_KP{d}") for d in range(10)] + [ecodes.KEY_KPENTER]
    found = scan_inputs(dev, open_device=lambda path: FakeInput("Keypad Reader", keypad))
    assert [info.name for info in found] == ["Keypad Reader"]


def test_scan_inputs_without_dev_input(tmp_path: Path) -> None:
    def never(path: str) -> FakeInput:
        raise AssertionError(path)

    assert scan_inputs(tmp_path, open_device=never) == []


def port(device: str, vid: int | None = None, serial: str | None = None) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number = vid, 0x6001 if vid else None, serial
    info.product = "FT232R USB UART" if vid else None
    info.location = "1-1.4:1.0" if vid else None
    return info


def test_scan_ports(tmp_path: Path) -> None:
    dev = make_dev(
        tmp_path,
        ["ttyUSB0", "ttyS0", "ttyS1", "ttyAMA0"],
        {
            "serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0": "ttyUSB0",
            "serial/by-path/platform-usb-0:1.4:1.0-port0": "ttyUSB0",
            "serial0": "ttyS0",
            "serial1": "ttyAMA0",
        },
    )
    comports = [
        port(str(dev / "ttyUSB0"), vid=0x0403, serial="A50285BI"),
        port(str(dev / "ttyS1")),  # a PC's built-in port: nothing says a reader is on it
        port(str(dev / "ttyAMA0")),
    ]  # ttyS0, a platform UART on the Pi, is one pyserial leaves out

    found = scan_ports(dev, comports=lambda: comports)

    assert found == [
        PortInfo(
            str(dev / "ttyAMA0"),
            aliases=(str(dev / "serial1"),),
        ),
        PortInfo(
            str(dev / "ttyUSB0"),
            name="FT232R USB UART",
            vid=0x0403,
            pid=0x6001,
            serial="A50285BI",
            phys="1-1.4:1.0",
            by_id=(str(dev / "serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"),),
            by_path=(str(dev / "serial/by-path/platform-usb-0:1.4:1.0-port0"),),
        ),
        PortInfo(str(dev / "ttyS0"), aliases=(str(dev / "serial0"),)),
    ]


def test_scan_ports_on_this_machine() -> None:
    ports = scan_ports()
    assert isinstance(ports, list)
    assert all(isinstance(item, PortInfo) for item in ports)


def test_main_prints_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    # This machine may have nothing to list; the exit status is 0 either way.
    assert discover.main() == 0
    assert capsys.readouterr().out.endswith("\n")
