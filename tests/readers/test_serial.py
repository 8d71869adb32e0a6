"""The `serial` reader against real pseudo-terminals.

SPEC "Readers", `serial`. A pty pair from `os.openpty()` is the reader: frames are
written to the master, and `SerialSource` opens the slave through real pyserial, by a
symlink in tmp_path that stands for `/dev/serial/by-id/...` (udev's by-id links are
symlinks too, re-pointed when a device comes back as another tty). Closing the master
hangs the slave up, as unplugging a USB-UART does.

Every wait is on a queue the reader's `emit` or `health` fills, or for the last test (a
`gateagent run` subprocess) on the daemon's log lines; the timeout is only a safety net.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import serial

from gateagent.core.debounce import Debouncer
from gateagent.feedback import Feedback
from gateagent.readers.base import start
from gateagent.readers.serial import SerialSource, open_port
from gateagent.simulator import Simulator
from tests.running import Run, states
from tests.settings import TOKEN, make_settings, write_config

BY_ID = "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
WAIT_S = 3.0  # safety net only: every wait returns as soon as the item arrives
FAST_S = 0.05  # reconnect_s and read timeout: a reconnect or a stop takes a moment
STX, ETX = b"\x02", b"\x03"


def rdm(data: str, *, crlf: bool = False, checksum: int | None = None) -> bytes:
    """An RDM6300 frame (ID-12LA with `crlf`): STX, 10 hex, XOR checksum, [CR LF], ETX."""
    if checksum is None:
        checksum = 0
        for value in bytes.fromhex(data):
            checksum ^= value
    return STX + data.encode() + b"%02X" % checksum + (b"\r\n" if crlf else b"") + ETX


# SPEC "Card numbers": EM4100 070067315809 is data 0700673158 with checksum 09.
assert rdm("0700673158") == b"\x02070067315809\x03"


class Pty:
    """A pseudo-terminal pair: the master is the reader module's side of the UART."""

    def __init__(self) -> None:
        master, slave = os.openpty()
        self.master: int | None = master
        self._slave: int | None = slave
        # Raw mode, so CR, LF, STX and ETX pass unchanged (pyserial sets raw mode again
        # when it opens the port; this covers the moments before).
        tty.setraw(slave)
        self.path = os.ttyname(slave)

    def write(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)

    def unplug(self) -> None:
        """Close the master: the kernel hangs the slave up and removes /dev/pts/N."""
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def close(self) -> None:
        self.unplug()
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None


@pytest.fixture
def new_pty() -> Iterator[Callable[[], Pty]]:
    made: list[Pty] = []

    def make() -> Pty:
        made.append(Pty())
        return made[-1]

    yield make
    for pty in made:
        pty.close()


@pytest.fixture
def link(tmp_path: Path) -> Path:
    by_id = tmp_path / "serial" / "by-id"
    by_id.mkdir(parents=True)
    return by_id / BY_ID


def point(link: Path, target: str) -> None:
    """(Re-)point the by-id link atomically, as udev does."""
    new = link.with_name(link.name + ".new")
    os.symlink(target, new)
    os.replace(new, link)


@dataclass
class Running:
    source: SerialSource
    stop: threading.Event = field(default_factory=threading.Event)
    emits: queue.Queue[tuple[str, float]] = field(default_factory=queue.Queue)
    healths: queue.Queue[tuple[bool, str | None]] = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None

    def card(self) -> str:
        return self.emits.get(timeout=WAIT_S)[0]

    def cards(self, count: int) -> list[str]:
        return [self.card() for _ in range(count)]

    def health(self) -> tuple[bool, str | None]:
        return self.healths.get(timeout=WAIT_S)

    def connected(self) -> None:
        assert self.health() == (True, None)

    def end(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(WAIT_S)
            assert not self.thread.is_alive()


@pytest.fixture
def run() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def begin(
        path: Path | str,
        protocol: Literal["rdm6300", "lines"] = "rdm6300",
        **options: Any,
    ) -> Running:
        options.setdefault("reconnect_s", FAST_S)
        options.setdefault("read_timeout_s", FAST_S)
        source = SerialSource("entrance", str(path), 9600, protocol, **options)
        running = Running(source)
        running.thread = start(
            source,
            lambda raw: running.emits.put((raw, time.monotonic())),
            lambda ok, error: running.healths.put((ok, error)),
            running.stop,
        )
        started.append(running)
        return running

    yield begin
    for running in started:
        running.end()


@pytest.fixture
def plugged(
    new_pty: Callable[[], Pty], link: Path, run: Callable[..., Running]
) -> Callable[..., tuple[Pty, Running]]:
    """A reader on a pty behind the by-id link, connected (so writes are not flushed)."""

    def plug(protocol: Literal["rdm6300", "lines"] = "rdm6300") -> tuple[Pty, Running]:
        pty = new_pty()
        point(link, pty.path)
        running = run(link, protocol)
        running.connected()
        return pty, running

    return plug


def dropped(caplog: pytest.LogCaptureFixture) -> list[tuple[Any, ...]]:
    """(reader, reason, data) of each "read dropped" warning."""
    return [
        tuple(record.args)  # type: ignore[arg-type]
        for record in caplog.records
        if record.name == "gateagent.readers.base" and record.msg.startswith("read dropped")
    ]


# -- frames ----------------------------------------------------------------------------

TWO_CARDS = rdm("0700673158") + rdm("0A00C3A5F1")


@pytest.mark.parametrize(
    "chunks",
    [
        [TWO_CARDS],
        [TWO_CARDS[i : i + 1] for i in range(len(TWO_CARDS))],
        [TWO_CARDS[:1], TWO_CARDS[1:9], TWO_CARDS[9:17], TWO_CARDS[17:]],
    ],
    ids=["whole", "byte-by-byte", "split"],
)
def test_rdm6300_frames_however_the_writes_split_them(
    plugged: Callable[..., tuple[Pty, Running]], chunks: list[bytes]
) -> None:
    pty, running = plugged()
    for chunk in chunks:
        pty.write(chunk)
    assert running.cards(2) == ["0700673158", "0A00C3A5F1"]


def test_garbage_between_frames_is_logged_and_reading_goes_on(
    plugged: Callable[..., tuple[Pty, Running]], caplog: pytest.LogCaptureFixture
) -> None:
    pty, running = plugged()
    noise = b"Z" * 30 + b"Y" * 34  # MAX_NOISE bytes: reported as one piece
    pty.write(b"\xff\x00junk" + rdm("0700673158") + noise + rdm("0A00C3A5F1"))
    assert running.cards(2) == ["0700673158", "0A00C3A5F1"]
    # Both warnings were logged by the reader thread before the second card was emitted.
    assert dropped(caplog) == [
        ("entrance", "noise", b"\xff\x00junk"),
        ("entrance", "noise", noise[:40]),  # the data is cut to 40 bytes in the log
    ]


def test_wrong_checksum_is_dropped_with_a_warning(
    plugged: Callable[..., tuple[Pty, Running]], caplog: pytest.LogCaptureFixture
) -> None:
    pty, running = plugged()
    bad = rdm("0700673158", checksum=0x08)
    pty.write(bad + rdm("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"
    assert dropped(caplog) == [("entrance", "bad-checksum", bad)]
    assert running.emits.empty()


# -- garbage at the gate: "unreadable" (issue 15) -----------------------------------------

OUTCOME_WRITER = """
import os, sys
with open(sys.argv[1], "a") as out:
    out.write(os.environ["FEEDBACK_OUTCOME"] + " " + os.environ["FEEDBACK_READER"] + "\\n")
"""


class VerdictClock:
    """The feedback's monotonic clock, moved by the test (the pins and reads run on
    real time): which garbage falls in one burst is decided by the test, not the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def heard(tmp_path: Path) -> Iterator[tuple[Feedback, VerdictClock, Path]]:
    """A Feedback whose `[feedback] command` appends each outcome it hears to a file."""
    (tmp_path / "hook.py").write_text(OUTCOME_WRITER)
    out = tmp_path / "heard.txt"
    settings = make_settings(
        tmp_path,
        "http://127.0.0.1:9/",
        feedback={"command": f"{sys.executable} {tmp_path / 'hook.py'} {out}"},
    )
    clock = VerdictClock()
    feedback = Feedback(settings, monotonic=clock)
    feedback.start()
    yield feedback, clock, out
    feedback.close()


def outcomes(feedback: Feedback, out: Path) -> list[str]:
    assert feedback.wait_idle(WAIT_S)
    return out.read_text().splitlines() if out.exists() else []


def test_a_bad_checksum_is_heard_as_unreadable_once(
    new_pty: Callable[[], Pty],
    link: Path,
    run: Callable[..., Running],
    heard: tuple[Feedback, VerdictClock, Path],
) -> None:
    feedback, _, out = heard
    pty = new_pty()
    point(link, pty.path)
    running = run(link, on_garbage=lambda reader, garbage: feedback.unreadable(reader))
    running.connected()
    pty.write(rdm("0700673158", checksum=0x08) + rdm("0A00C3A5F1"))
    # The good card after it is emitted once the bad frame was handed over.
    assert running.card() == "0A00C3A5F1"
    assert outcomes(feedback, out) == ["unreadable entrance"]


def test_a_noisy_reader_is_one_unreadable_signal_per_burst(
    new_pty: Callable[[], Pty],
    link: Path,
    run: Callable[..., Running],
    heard: tuple[Feedback, VerdictClock, Path],
) -> None:
    feedback, clock, out = heard
    pty = new_pty()
    point(link, pty.path)
    running = run(link, on_garbage=lambda reader, garbage: feedback.unreadable(reader))
    running.connected()
    # A card held on a reader that fails its checksum, with noise between the frames:
    # 40 dropped reads within one burst.
    pty.write((rdm("0700673158", checksum=0x08) + b"\xff\x00junk") * 20 + rdm("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"
    assert outcomes(feedback, out) == ["unreadable entrance"]
    clock.now += 0.5  # still the same burst: more garbage, no signal
    pty.write(rdm("0700673158", checksum=0x08) + rdm("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"
    assert outcomes(feedback, out) == ["unreadable entrance"]
    clock.now += 1.0  # quiet for a second: the next bad read is heard again
    pty.write(rdm("0700673158", checksum=0x08) + rdm("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"
    assert outcomes(feedback, out) == ["unreadable entrance"] * 2


def test_all_zero_id_is_not_a_card(
    plugged: Callable[..., tuple[Pty, Running]], caplog: pytest.LogCaptureFixture
) -> None:
    pty, running = plugged()
    pty.write(rdm("0000000000") + rdm("0700673158"))
    assert running.card() == "0700673158"
    assert [reason for _, reason, _ in dropped(caplog)] == ["all-zero"]


def test_id12la_sends_cr_lf_before_etx(plugged: Callable[..., tuple[Pty, Running]]) -> None:
    pty, running = plugged()
    pty.write(rdm("0700673158", crlf=True) + rdm("0A00C3A5F1", crlf=True))
    assert running.cards(2) == ["0700673158", "0A00C3A5F1"]


def test_lines_protocol(plugged: Callable[..., tuple[Pty, Running]]) -> None:
    pty, running = plugged("lines")
    pty.write(b"0012822001\r\nABC123\n\r\n90D7")
    pty.write(b"52C5\r")
    assert running.cards(3) == ["0012822001", "ABC123", "90D752C5"]


# -- a held card -----------------------------------------------------------------------


def test_held_card_is_emitted_every_time_it_is_sent(
    plugged: Callable[..., tuple[Pty, Running]],
) -> None:
    # An RDM6300 repeats its frame while the card stays on the antenna; the reader
    # passes every frame on and leaves the debounce to the daemon (SPEC "Tap decisions").
    pty, running = plugged()
    for _ in range(10):
        pty.write(rdm("0700673158"))
    assert running.cards(10) == ["0700673158"] * 10
    assert running.emits.empty()


def test_held_card_is_one_tap_after_the_daemons_debouncer(
    plugged: Callable[..., tuple[Pty, Running]],
) -> None:
    pty, running = plugged()
    for _ in range(10):
        pty.write(rdm("0700673158"))
    reads = [running.emits.get(timeout=WAIT_S) for _ in range(10)]
    debouncer = Debouncer(window_s=3.0)
    taps = [card_no for card_no, at in reads if not debouncer.seen(card_no, at)]
    assert taps == ["0700673158"]


# -- missing, unplugged, busy ----------------------------------------------------------


def test_missing_at_start_then_plugged_in(
    new_pty: Callable[[], Pty], link: Path, run: Callable[..., Running]
) -> None:
    running = run(link)
    ok, error = running.health()
    assert not ok
    assert error == f"missing: {link} is not there (unplugged? see `gateagent readers`)"
    pty = new_pty()
    point(link, pty.path)
    running.connected()
    pty.write(rdm("0700673158"))
    assert running.card() == "0700673158"
    assert running.healths.empty()  # one report per change, not one per attempt


def test_unplug_is_a_state_and_the_reader_comes_back_as_another_tty(
    plugged: Callable[..., tuple[Pty, Running]], new_pty: Callable[[], Pty], link: Path
) -> None:
    old, running = plugged()
    old.write(rdm("0700673158"))
    assert running.card() == "0700673158"

    # Unplugged: udev removes the by-id link and the tty hangs up.
    link.unlink()
    old.unplug()
    ok, error = running.health()
    assert not ok
    assert error is not None
    assert error.startswith(f"disconnected: {link} ")

    # Plugged in again, now as another tty behind the same by-id link.
    new = new_pty()
    point(link, new.path)
    # The attempts that found no link in between kept the disconnected state: no
    # "missing" report came between the two.
    running.connected()
    new.write(rdm("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"
    assert running.healths.empty()


def test_hang_up_is_noticed_in_the_middle_of_a_read(
    plugged: Callable[..., tuple[Pty, Running]], new_pty: Callable[[], Pty], link: Path
) -> None:
    old, running = plugged()
    # The tty hangs up while the reader waits in read() and the link is still there
    # (it dangles: /dev/pts/N went with the master). pyserial: "device reports
    # readiness to read but returned no data".
    old.unplug()
    assert running.health() in {
        (False, f"disconnected: {link} was unplugged (reopened when it is back)"),
        # Only if the hang-up fell between two reads, in the idle check of the link.
        (False, f"disconnected: {link} is gone (unplugged? reopened when it is back)"),
    }
    new = new_pty()
    point(link, new.path)
    running.connected()
    new.write(rdm("0700673158"))
    assert running.card() == "0700673158"
    assert running.healths.empty()


def test_link_moved_to_another_tty_is_followed(
    plugged: Callable[..., tuple[Pty, Running]], new_pty: Callable[[], Pty], link: Path
) -> None:
    old, running = plugged()
    new = new_pty()
    point(link, new.path)  # the old tty still works, but it is no longer the configured one
    assert running.health() == (
        False,
        f"disconnected: {link} now leads to another port (reopening it)",
    )
    running.connected()
    old.write(rdm("0700673158"))  # not read any more
    new.write(rdm("0A00C3A5F1"))
    assert running.card() == "0A00C3A5F1"
    assert running.emits.empty()


def test_exclusive_a_second_reader_on_the_port_is_told_it_is_busy(
    plugged: Callable[..., tuple[Pty, Running]], link: Path, run: Callable[..., Running]
) -> None:
    pty, first = plugged()
    second = run(link)
    assert second.health() == (
        False,
        f"busy: another program holds {link} (stop it, or `fuser -v {link}`)",
    )
    pty.write(rdm("0700673158"))
    assert first.card() == "0700673158"

    first.end()  # closing the port releases the lock
    second.connected()
    pty.write(rdm("0A00C3A5F1"))
    assert second.card() == "0A00C3A5F1"
    assert first.emits.empty()


def test_not_a_tty(link: Path, run: Callable[..., Running]) -> None:
    # pyserial opens it, then fails to configure it, with no errno.
    not_tty = link.with_name("plain-file")
    not_tty.write_bytes(b"")
    point(link, str(not_tty))
    running = run(link)
    ok, error = running.health()
    assert not ok
    assert error is not None
    assert error.startswith(f"cannot open {link}: Could not configure port")


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any file")
def test_no_permission_names_the_group(
    new_pty: Callable[[], Pty], link: Path, run: Callable[..., Running]
) -> None:
    pty = new_pty()
    os.chmod(pty.path, 0)
    point(link, pty.path)
    running = run(link)
    ok, error = running.health()
    assert not ok
    assert error is not None
    assert error.startswith(f"no permission to open {link}: add the gateagent user")
    assert "'dialout'" in error


def test_a_missing_reader_is_retried_every_reconnect_s_not_in_a_busy_loop(
    link: Path, run: Callable[..., Running]
) -> None:
    attempts: list[float] = []

    def counting_open(path: str, baudrate: int, timeout_s: float) -> serial.Serial:
        attempts.append(time.monotonic())
        return open_port(path, baudrate, timeout_s)

    running = run(link, reconnect_s=0.2, open_port=counting_open)
    assert running.health()[0] is False
    # The measured span: about 1 s at 0.2 s between attempts is about 5 attempts; a
    # busy loop would make thousands. Only an upper bound, so a slow machine passes.
    running.stop.wait(1.0)
    running.end()
    assert 2 <= len(attempts) <= 20
    assert running.healths.empty()  # the same failure is reported once


# -- in the daemon ---------------------------------------------------------------------


def test_unplug_and_replug_in_a_running_daemon_while_another_reader_taps(
    tmp_path: Path, new_pty: Callable[[], Pty], link: Path
) -> None:
    # SPEC "Readers": unplugging is a state that does not disturb the other readers.
    # benchmarks/replug_soak.py does this 100 times, with the CPU measured while unplugged.
    readers = [
        {"name": "desk", "kind": "stdin"},
        {"name": "entrance", "kind": "serial", "path": str(link)},
    ]
    pty = new_pty()
    point(link, pty.path)
    expected = []
    with Simulator(token=TOKEN) as sim:
        settings = make_settings(tmp_path, sim.integration_url, readers=readers)
        run = Run(write_config(tmp_path / "config.toml", settings))
        try:
            for cycle in range(1, 4):
                run.wait_for_line("reader connected reader=entrance", cycle)
                card = f"0A00C3A5{cycle:02X}"
                pty.write(rdm(card))
                run.wait_for_line(f"tap recorded card_no={card} reader=entrance")
                link.unlink()
                pty.unplug()
                run.wait_for_line("reader disconnected reader=entrance", cycle)
                typed = f"{cycle:010d}"
                run.tap(typed)
                run.wait_for_line(f"tap recorded card_no={typed} reader=desk")
                expected += [card, typed]
                pty = new_pty()
                point(link, pty.path)
            run.wait_for_line("reader connected reader=entrance", 4)
            assert run.stop() == 0
        finally:
            if run.process.poll() is None:
                run.kill()
    assert [card_no for card_no, _ in states(settings.storage.path)] == expected


# -- bytes that never form a frame (issue 13: a wrong protocol is not silence) ---------


@pytest.fixture
def warnings_of_serial() -> Iterator[queue.Queue[logging.LogRecord]]:
    """The serial reader's own warnings, as the reader thread logs them."""
    records: queue.Queue[logging.LogRecord] = queue.Queue()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.put(record)

    logger = logging.getLogger("gateagent.readers.serial")
    handler = Collect(logging.WARNING)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_a_lines_reader_set_to_rdm6300_is_one_warning_with_the_fix(
    new_pty: Callable[[], Pty],
    link: Path,
    run: Callable[..., Running],
    warnings_of_serial: queue.Queue[logging.LogRecord],
) -> None:
    pty = new_pty()
    point(link, pty.path)
    running = run(link, "rdm6300", noise_warn_s=0.3)
    running.connected()
    for _ in range(3):  # three taps, as in issue 13
        pty.write(b"0012822001\r\n")
    record = warnings_of_serial.get(timeout=WAIT_S)
    assert record.getMessage() == (
        'bytes but no card frame for 0.3 s reader=entrance protocol=rdm6300 first_bytes="30 30'
        ' 31 32 38 32 32 30 30 31 0d 0a 30 30 31 32": this looks like a `lines` reader: set'
        ' protocol = "lines"'
    )
    pty.write(b"0012822001\r\n" * 3)  # more of the same: no second warning
    pty.write(rdm("0700673158"))
    assert running.card() == "0700673158"
    pty.write(b"0012822001\r\n")
    # The reader has read past the next deadline once this frame is out.
    pty.write(b"x" * 20)
    with pytest.raises(queue.Empty):
        warnings_of_serial.get(timeout=0.6)  # what is waited for here is that nothing comes


def test_an_rdm6300_reader_set_to_lines_is_told_so(
    new_pty: Callable[[], Pty],
    link: Path,
    run: Callable[..., Running],
    warnings_of_serial: queue.Queue[logging.LogRecord],
) -> None:
    pty = new_pty()
    point(link, pty.path)
    running = run(link, "lines", noise_warn_s=0.3)
    running.connected()
    pty.write(rdm("0700673158") * 2)
    message = warnings_of_serial.get(timeout=WAIT_S).getMessage()
    assert 'protocol=lines first_bytes="02 30 37 30 30 36 37 33 31 35 38 30 39 03 02 30"' in message
    assert message.endswith('this looks like a `rdm6300` reader: set protocol = "rdm6300"')


def test_frames_keep_the_warning_away(
    plugged: Callable[..., tuple[Pty, Running]],
    warnings_of_serial: queue.Queue[logging.LogRecord],
) -> None:
    pty, running = plugged()
    running.source._noise_warn_s = 0.2
    pty.write(rdm("0700673158") + b"\r\n")  # a stray line end after a good frame
    assert running.card() == "0700673158"
    with pytest.raises(queue.Empty):
        warnings_of_serial.get(timeout=0.6)  # nothing is to come: the timeout is the test


def test_on_bytes_sees_every_chunk(plugged: Callable[..., tuple[Pty, Running]]) -> None:
    pty, running = plugged()
    chunks: queue.Queue[bytes] = queue.Queue()
    running.source.on_bytes = chunks.put
    pty.write(rdm("0700673158"))
    assert running.card() == "0700673158"
    seen = b""
    while len(seen) < len(rdm("0700673158")):
        seen += chunks.get(timeout=WAIT_S)
    assert seen == rdm("0700673158")
