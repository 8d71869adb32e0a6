"""The `hid` reader against a fake device that delivers real evdev InputEvents.

SPEC "Readers", `hid`. This machine has no /dev/input, so `FakeDevice` stands in for
`evdev.InputDevice` behind the `open_device` seam: its `fd` is a real pipe (a queued
event makes it readable for select) and `read()` behaves as evdev's does.
"""

from __future__ import annotations

import errno
import itertools
import logging
import logging.handlers
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from evdev import InputEvent, ecodes

from gateagent.core.frames import Garbage
from gateagent.readers.base import Dropped, start
from gateagent.readers.hid import HidSource

PATH = "/dev/input/by-id/usb-Sycreader_RFID_Technology_Co._Ltd_SYC_ID_IC_USB_Reader-event-kbd"
WAIT_S = 3.0  # safety net only: every wait returns as soon as the item arrives
FAST_S = 0.05  # reconnect_s for the tests that reconnect

DOWN, UP, REPEAT = 1, 0, 2
STEP_US = 8_000  # a wedge types a key every few milliseconds
KEYCODES = {str(d): getattr(ecodes, f"KEY_{d}") for d in range(10)} | {
    c: getattr(ecodes, f"KEY_{c}") for c in "ABCDEF"
}
KEYPAD = {str(d): getattr(ecodes, f"KEY_KP{d}") for d in range(10)}


def now_us() -> int:
    return int(time.time() * 1_000_000)


def ev(at_us: int, ev_type: int, code: int, value: int) -> InputEvent:
    return InputEvent(at_us // 1_000_000, at_us % 1_000_000, ev_type, code, value)


def key(at_us: int, code: int, value: int) -> list[InputEvent]:
    """One key event as a USB keyboard reports it: scan code, key, SYN_REPORT."""
    return [
        ev(at_us, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + code),
        ev(at_us, ecodes.EV_KEY, code, value),
        ev(at_us, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
    ]


def typed(
    text: str, *, at_us: int | None = None, keypad: bool = False, enter: bool = True
) -> list[InputEvent]:
    """What a wedge sends for `text` (Shift around A-F), then Enter."""
    at = now_us() if at_us is None else at_us
    events: list[InputEvent] = []
    for char in text:
        code = (KEYPAD if keypad else KEYCODES)[char]
        if char.isalpha():
            events += key(at, ecodes.KEY_LEFTSHIFT, DOWN)
            events += key(at, code, DOWN) + key(at, code, UP)
            events += key(at, ecodes.KEY_LEFTSHIFT, UP)
        else:
            events += key(at, code, DOWN) + key(at, code, UP)
        at += STEP_US
    if enter:
        code = ecodes.KEY_KPENTER if keypad else ecodes.KEY_ENTER
        events += key(at, code, DOWN) + key(at, code, UP)
    return events


class FakeDevice:
    """The `InputDevice` seam: a pipe as `fd`, a queue of events behind it."""

    def __init__(self, grab_errors: int = 0) -> None:
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._read_end, False)
        self.fd = self._read_end
        self.calls: list[str] = []
        self.closed = threading.Event()
        self._grab_errors = grab_errors
        self._events: list[InputEvent] = []
        self._failure: OSError | None = None
        self._lock = threading.Lock()

    def push(self, events: list[InputEvent]) -> None:
        with self._lock:
            self._events += events
            os.write(self._write_end, b"!")

    def unplug(self, code: int = errno.ENODEV) -> None:
        """From now on reads fail as the kernel's do for a removed device."""
        with self._lock:
            self._failure = OSError(code, os.strerror(code))
            os.write(self._write_end, b"!")

    def grab(self) -> None:
        self.calls.append("grab")
        if self._grab_errors:
            self._grab_errors -= 1
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    def read(self) -> Iterator[InputEvent]:
        self.calls.append("read")
        with self._lock:
            if self._failure is not None:
                raise self._failure
            try:
                while os.read(self._read_end, 4096):
                    pass
            except BlockingIOError:
                pass
            events, self._events = self._events, []
        if not events:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return iter(events)

    def close(self) -> None:
        if not self.closed.is_set():
            self.calls.append("close")
            os.close(self._read_end)
            os.close(self._write_end)
            self.closed.set()


class Opener:
    """`open_device`: answers each call with the next device or error in `script`
    (the last entry repeats), and records when it was called."""

    def __init__(self, *script: FakeDevice | OSError) -> None:
        self.script = list(script)
        self.paths: list[str] = []
        self.attempts: queue.Queue[float] = queue.Queue()  # time.monotonic() of each

    def __call__(self, path: str) -> FakeDevice:
        self.paths.append(path)
        self.attempts.put(time.monotonic())
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, OSError):
            raise item
        return item


class Running:
    """A HidSource in its reader thread, its emits and health reports in queues."""

    def __init__(self, source: HidSource) -> None:
        self.cards: queue.Queue[str] = queue.Queue()
        self.health: queue.Queue[tuple[bool, str | None]] = queue.Queue()
        self.stop = threading.Event()
        self.thread = start(
            source,
            self.cards.put,
            lambda ok, error: self.health.put((ok, error)),
            self.stop,
        )

    def card(self) -> str:
        return self.cards.get(timeout=WAIT_S)

    def next_health(self) -> tuple[bool, str | None]:
        return self.health.get(timeout=WAIT_S)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


@pytest.fixture
def run_source() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def run(
        opener: Opener, reconnect_s: float = FAST_S, on_garbage: Dropped | None = None
    ) -> Running:
        source = HidSource(
            "exit", PATH, open_device=opener, reconnect_s=reconnect_s, on_garbage=on_garbage
        )
        running.append(Running(source))
        return running[-1]

    yield run
    for item in running:
        item.close()


def enoent() -> OSError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), PATH)


@pytest.mark.parametrize(
    ("events", "card"),
    [
        (typed("0012822001"), "0012822001"),
        (typed("0123456789", keypad=True), "0123456789"),
        (typed("0A00C3A5F1"), "0A00C3A5F1"),
        (typed("ABCDEF"), "ABCDEF"),
    ],
    ids=["digits-enter", "keypad-digits-keypad-enter", "hex-with-shift", "a-to-f"],
)
def test_a_card_is_emitted(
    run_source: Callable[..., Running], events: list[InputEvent], card: str
) -> None:
    device = FakeDevice()
    running = run_source(Opener(device))
    assert running.next_health() == (True, None)
    device.push(events)
    assert running.card() == card
    assert device.calls.index("grab") < device.calls.index("read")
    assert "close" not in device.calls


def test_key_up_and_autorepeat_are_ignored(run_source: Callable[..., Running]) -> None:
    at = now_us()
    device = FakeDevice()
    running = run_source(Opener(device))
    assert running.next_health() == (True, None)
    # A stray release (a key held when the grab began), then 1 held long enough to
    # autorepeat: still one "1"; then 2, and Enter.
    device.push(
        key(at, ecodes.KEY_9, UP)
        + key(at, ecodes.KEY_1, DOWN)
        + key(at + 1000, ecodes.KEY_1, REPEAT)
        + key(at + 2000, ecodes.KEY_1, REPEAT)
        + key(at + 3000, ecodes.KEY_1, UP)
        + typed("2", at_us=at + 4000)
    )
    assert running.card() == "12"
    assert running.cards.empty()


def test_a_partial_read_is_dropped_after_the_gap(
    run_source: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateagent.readers.base")
    at = now_us()
    device = FakeDevice()
    running = run_source(Opener(device))
    assert running.next_health() == (True, None)
    # Half a card, then a full one 300 ms later: the half must not prefix the card.
    device.push(typed("00128", at_us=at, enter=False) + typed("0A00C3A5F1", at_us=at + 300_000))
    assert running.card() == "0A00C3A5F1"
    assert running.cards.empty()
    dropped = [r.getMessage() for r in caplog.records if "read dropped" in r.getMessage()]
    assert dropped == ["read dropped: garbage reader=exit reason=timeout data=b'00128'"]


def test_a_partial_read_left_alone_is_dropped_by_the_poll(
    run_source: Callable[..., Running],
) -> None:
    warnings: queue.Queue[logging.LogRecord] = queue.Queue()
    handler = logging.handlers.QueueHandler(warnings)
    logger = logging.getLogger("gateagent.readers.base")
    logger.addHandler(handler)
    try:
        device = FakeDevice()
        running = run_source(Opener(device))
        assert running.next_health() == (True, None)
        # No key follows: the select() timeout drops the half card on its own.
        device.push(typed("4711", enter=False))
        warning = warnings.get(timeout=WAIT_S).getMessage()
        assert warning == "read dropped: garbage reader=exit reason=timeout data=b'4711'"
        device.push(typed("42"))
        assert running.card() == "42"
        assert running.cards.empty()
        assert warnings.empty()
    finally:
        logger.removeHandler(handler)


def test_a_dropped_partial_read_is_told_to_on_garbage(
    run_source: Callable[..., Running],
) -> None:
    # The daemon passes on_garbage on to feedback: "unreadable" at the gate (issue 15).
    garbage: queue.Queue[tuple[str, Garbage]] = queue.Queue()
    device = FakeDevice()
    running = run_source(Opener(device), on_garbage=lambda reader, g: garbage.put((reader, g)))
    assert running.next_health() == (True, None)
    device.push(typed("4711", enter=False))  # dropped by the poll, 200 ms on
    assert garbage.get(timeout=WAIT_S) == ("exit", Garbage(b"4711", "timeout"))
    device.push(typed("42"))
    assert running.card() == "42"
    assert garbage.empty()


def test_events_the_kernel_dropped_spoil_the_read_they_were_in(
    run_source: Callable[..., Running],
) -> None:
    # A card is 66 events, a client's buffer 64: a reader thread that fell behind gets
    # SYN_DROPPED and the card's tail. "2001" must not become a tap.
    garbage: queue.Queue[tuple[str, Garbage]] = queue.Queue()
    at = now_us()
    device = FakeDevice()
    running = run_source(Opener(device), on_garbage=lambda reader, g: garbage.put((reader, g)))
    assert running.next_health() == (True, None)
    device.push(
        [
            ev(at, ecodes.EV_SYN, ecodes.SYN_DROPPED, 0),
            *typed("2001", at_us=at + 1000),
            *typed("0012822001", at_us=at + 100_000),
        ]
    )
    assert running.card() == "0012822001"
    assert running.cards.empty()
    assert garbage.get(timeout=WAIT_S) == ("exit", Garbage(b"2001", "events-dropped"))
    assert garbage.empty()


def test_missing_at_start_then_plugged_in(run_source: Callable[..., Running]) -> None:
    device = FakeDevice()
    opener = Opener(enoent(), enoent(), enoent(), device)
    running = run_source(opener)
    ok, error = running.next_health()
    assert not ok
    assert error is not None
    assert error.startswith("missing: ")
    assert PATH in error
    assert running.next_health() == (True, None)  # repeated "missing" not reported
    device.push(typed("0012822001"))
    assert running.card() == "0012822001"
    assert opener.paths == [PATH] * 4


def test_no_permission_names_the_input_group(run_source: Callable[..., Running]) -> None:
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), PATH)
    running = run_source(Opener(denied))
    ok, error = running.next_health()
    assert not ok
    assert error is not None
    assert "'input' group" in error
    assert PATH in error


def test_grab_busy_is_reported_then_retried(run_source: Callable[..., Running]) -> None:
    busy, free = FakeDevice(grab_errors=1), FakeDevice()
    running = run_source(Opener(busy, free))
    ok, error = running.next_health()
    assert not ok
    assert error is not None
    assert error.startswith(f"busy: another program has grabbed {PATH}")
    assert busy.closed.is_set()
    assert busy.calls == ["grab", "close"]  # never read: its keys may reach a console
    assert running.next_health() == (True, None)
    free.push(typed("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"


@pytest.mark.parametrize("code", [errno.ENODEV, errno.EIO], ids=["ENODEV", "EIO"])
def test_unplug_then_replug(run_source: Callable[..., Running], code: int) -> None:
    first, second = FakeDevice(), FakeDevice()
    opener = Opener(first, enoent(), enoent(), second)
    running = run_source(opener)
    assert running.next_health() == (True, None)
    first.push(typed("0012822001"))
    assert running.card() == "0012822001"

    first.unplug(code)
    ok, error = running.next_health()
    assert not ok
    assert error is not None
    assert error.startswith(f"disconnected: {PATH} was unplugged")
    assert first.closed.wait(WAIT_S)
    # While the path is away the state stays "disconnected"; then it is back.
    assert running.next_health() == (True, None)
    assert second.calls[0] == "grab"
    second.push(typed("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"
    assert len(opener.paths) == 4


def test_no_busy_loop_while_missing(run_source: Callable[..., Running]) -> None:
    reconnect_s = 0.2
    opener = Opener(enoent())
    running = run_source(opener, reconnect_s=reconnect_s)
    # Five attempts take about 1 s: one every reconnect_s, and "missing" reported once.
    times = [opener.attempts.get(timeout=WAIT_S) for _ in range(5)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= reconnect_s * 0.9 for gap in gaps), gaps
    assert len(opener.paths) <= 20
    assert running.next_health()[0] is False
    assert running.health.empty()


def test_stop_closes_the_device(run_source: Callable[..., Running]) -> None:
    device = FakeDevice()
    running = run_source(Opener(device))
    assert running.next_health() == (True, None)
    running.close()
    assert device.closed.is_set()
    assert device.calls[-1] == "close"


def test_probe_opens_grabs_and_releases_as_check_does() -> None:
    busy, free = FakeDevice(grab_errors=1), FakeDevice()
    source = HidSource("exit", PATH, open_device=Opener(busy, free))
    problem = source.probe()
    assert problem is not None
    assert problem.startswith(f"busy: another program has grabbed {PATH}")
    assert source.probe() is None
    assert free.calls == ["grab", "close"]  # released: the daemon can grab it next
