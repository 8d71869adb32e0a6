"""Feedback outputs (issue 15): the pins' states over time per outcome on gpiozero's
MockFactory (this machine has no GPIO), the command hook as a real subprocess, and a
reader's keyboard LED on the evdev seam (a fake device recording its writes)."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from evdev import ecodes
from gpiozero import LED
from gpiozero.pins.mock import MockFactory

from gateagent.config import Config
from gateagent.core.answers import Delivered, Rejected, Retry
from gateagent.core.direction import TOO_SOON_AFTER_CHECK_IN
from gateagent.feedback import QUEUE_MAX, Feedback, check_outputs, command_env
from gateagent.store import Tap
from tests.settings import TOKEN, make_settings
from tests.test_feedback_daemon import Heard, SlowFactory

BUZZER, GREEN, RED = 17, 27, 22
PINS = {"buzzer_pin": BUZZER, "green_pin": GREEN, "red_pin": RED}
WAIT_S = 5.0  # safety net only: the waits return as soon as the signals are played
# The pins run on real time: a step may end late on a loaded machine, never early.
EARLY_S, LATE_S = 0.03, 0.5


class Clock:
    """The verdict window's clock; the pins run on real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    made = MockFactory()
    yield made
    made.reset()


def settings_for(tmp_path: Path, **feedback: Any) -> Config:
    return make_settings(tmp_path, "http://127.0.0.1:9/", feedback=feedback)


def tap(state: str = "pending", reason: str | None = None, reader: str = "desk") -> Tap:
    return Tap(
        seq=1,
        tap_id="5f0c7a8e-1d2b-4c3d-9e8f-0a1b2c3d4e5f",
        card_no="0012822001",
        reader=reader,
        gate=4,
        direction="auto",
        checktype=1 if state != "ignored" else None,
        state=state,
        reason=reason,
        tapped_at=datetime(2024, 1, 15, 1, 30, tzinfo=UTC),
        attempts=0,
    )


def history(factory: MockFactory, pin: int) -> list[tuple[bool, float]]:
    """The pin's states after its first, each with the seconds since the one before."""
    return [(bool(s.state), s.timestamp) for s in factory.pin(pin).states[1:]]


def assert_history(got: list[tuple[bool, float]], want: list[tuple[bool, float]]) -> None:
    assert [state for state, _ in got] == [state for state, _ in want], got
    for (_, seconds), (_, expected) in zip(got, want, strict=True):
        assert expected - EARLY_S <= seconds <= expected + LATE_S, got


def played(tmp_path: Path, factory: MockFactory, *signals: Any, clock: Clock | None = None) -> None:
    feedback = Feedback(
        settings_for(tmp_path, **PINS), pin_factory=factory, monotonic=clock or Clock()
    )
    feedback.start()
    try:
        for signal in signals:
            signal(feedback)
        assert feedback.wait_idle(WAIT_S)
    finally:
        feedback.close()


def test_recorded_is_one_short_beep_and_green(tmp_path: Path, factory: MockFactory) -> None:
    played(tmp_path, factory, lambda f: f.recorded(tap()))
    assert_history(history(factory, BUZZER), [(True, 0.0), (False, 0.1)])
    assert_history(history(factory, GREEN), [(True, 0.0), (False, 1.0)])
    assert history(factory, RED) == []


def test_too_soon_is_two_beeps_and_amber(tmp_path: Path, factory: MockFactory) -> None:
    played(tmp_path, factory, lambda f: f.recorded(tap("ignored", TOO_SOON_AFTER_CHECK_IN)))
    beeps = [(True, 0.0), (False, 0.1), (True, 0.1), (False, 0.1)]
    assert_history(history(factory, BUZZER), beeps)
    assert_history(history(factory, GREEN), [(True, 0.0), (False, 1.0)])
    assert_history(history(factory, RED), [(True, 0.0), (False, 1.0)])


def test_unreadable_is_three_quick_beeps_and_red(tmp_path: Path, factory: MockFactory) -> None:
    played(tmp_path, factory, lambda f: f.unreadable("desk"))
    three = [(True, 0.0), (False, 0.05), (True, 0.05), (False, 0.05), (True, 0.05), (False, 0.05)]
    assert_history(history(factory, BUZZER), three)
    assert_history(history(factory, RED), three)
    assert history(factory, GREEN) == []


def test_a_verdict_in_time_follows_the_recorded_signal(
    tmp_path: Path, factory: MockFactory
) -> None:
    clock = Clock()

    def answered(feedback: Feedback) -> None:
        time.sleep(0.3)  # the server's answer time: what the pins show meanwhile is tested
        clock.now = 0.3
        feedback.answer(tap(), Delivered("Budi Santoso", "PRESENT"))

    played(tmp_path, factory, lambda f: f.recorded(tap()), answered, clock=clock)
    assert_history(history(factory, BUZZER), [(True, 0.0), (False, 0.1)])
    # Green from the recorded signal on, and 1.5 s more from the verdict.
    assert_history(history(factory, GREEN), [(True, 0.0), (False, 1.8)])


def test_unknown_card_in_time_is_a_long_beep_and_red(tmp_path: Path, factory: MockFactory) -> None:
    clock = Clock()

    def answered(feedback: Feedback) -> None:
        time.sleep(0.2)  # the server's answer time
        clock.now = 0.2
        feedback.answer(tap(), Rejected("unknown-card", 404, "No student found"))

    played(tmp_path, factory, lambda f: f.recorded(tap()), answered, clock=clock)
    assert_history(history(factory, BUZZER), [(True, 0.0), (False, 0.1), (True, 0.1), (False, 0.8)])
    assert_history(history(factory, GREEN), [(True, 0.0), (False, 0.2)])
    assert_history(history(factory, RED), [(True, 0.2), (False, 2.0)])


def test_a_verdict_too_late_is_not_signalled(tmp_path: Path, factory: MockFactory) -> None:
    clock = Clock()

    def late(feedback: Feedback) -> None:
        clock.now = 2.5  # verdict_within is 2 s: the person has walked on
        feedback.answer(tap(), Rejected("unknown-card", 404, "No student found"))

    played(tmp_path, factory, lambda f: f.recorded(tap()), late, clock=clock)
    assert_history(history(factory, BUZZER), [(True, 0.0), (False, 0.1)])
    assert_history(history(factory, GREEN), [(True, 0.0), (False, 1.0)])
    assert history(factory, RED) == []


def test_a_verdict_that_never_comes_leaves_the_recorded_signal(
    tmp_path: Path, factory: MockFactory
) -> None:
    # The server is down: retries are no verdict, and the recorded signal is all.
    played(
        tmp_path,
        factory,
        lambda f: f.recorded(tap()),
        lambda f: f.answer(tap(), Retry("connection-error", "refused")),
    )
    assert_history(history(factory, BUZZER), [(True, 0.0), (False, 0.1)])
    assert_history(history(factory, GREEN), [(True, 0.0), (False, 1.0)])
    assert history(factory, RED) == []


def test_an_answer_for_a_tap_not_signalled_now_is_no_verdict(
    tmp_path: Path, factory: MockFactory
) -> None:
    # A tap recorded during an outage is delivered later: nobody is at the gate for it.
    played(tmp_path, factory, lambda f: f.answer(tap(), Delivered("Budi", "PRESENT")))
    assert history(factory, GREEN) == history(factory, BUZZER) == []


def test_a_busy_pin_is_one_warning_and_no_stop(
    tmp_path: Path, factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    holder = LED(GREEN, pin_factory=factory)  # another program's LED on our pin
    feedback = Feedback(settings_for(tmp_path, **PINS), pin_factory=factory)
    feedback.start()
    feedback.recorded(tap())
    assert feedback.wait_idle(WAIT_S)
    feedback.close()
    holder.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "feedback output unavailable" in warnings[0]
    assert "GPIOPinInUse" in warnings[0]
    assert history(factory, BUZZER) == []  # none of the pins is half used


def test_the_pins_open_in_the_players_thread(tmp_path: Path) -> None:
    factory = SlowFactory(WAIT_S)
    feedback = Feedback(settings_for(tmp_path, **PINS), pin_factory=factory)
    try:
        feedback.start()
        assert factory.opening.wait(WAIT_S)  # the pins are being opened, and hang
        feedback.recorded(tap())
        # Made, started and told of a tap while the pins still hang: the caller (the
        # daemon's event loop) never waited for them.
        assert not factory.opened.is_set()
        factory.release.set()
        assert feedback.wait_idle(WAIT_S)
        feedback.close()
        # The signal given meanwhile played once they were open.
        assert_history(history(factory, BUZZER), [(True, 0.0), (False, 0.1)])
    finally:
        factory.release.set()
        feedback.close()
        factory.reset()


def test_a_reload_takes_the_same_pins_after_the_old_outputs_let_them_go(
    tmp_path: Path, factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    old = Feedback(settings_for(tmp_path, buzzer_pin=BUZZER), pin_factory=factory)
    old.start()
    old.recorded(tap())
    assert old.wait_idle(WAIT_S)
    new = old.replaced(settings_for(tmp_path, **PINS))
    new.recorded(tap())
    assert new.wait_idle(WAIT_S)
    new.close()
    assert "feedback output unavailable" not in caplog.text  # no GPIOPinInUse
    assert [state for state, _ in history(factory, BUZZER)] == [True, False, True, False]
    assert_history(history(factory, GREEN), [(True, 0.0), (False, 1.0)])


def test_no_feedback_configured_costs_nothing(tmp_path: Path) -> None:
    feedback = Feedback(settings_for(tmp_path))
    assert not feedback.enabled
    feedback.start()
    feedback.recorded(tap())
    feedback.close()


# -- the command hook ---------------------------------------------------------------------


def hook(tmp_path: Path, body: str) -> str:
    script = tmp_path / "hook.py"
    script.write_text(body)
    return f"{sys.executable} {script}"


ENV_WRITER = """
import json, os, sys
with open(sys.argv[0] + ".out", "a") as out:
    out.write(json.dumps(dict(os.environ)) + "\\n")
"""


def test_the_command_hears_each_signal_and_never_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEAGENT_UPLINK__TOKEN", TOKEN)
    monkeypatch.setenv("SOMETHING_ELSE", "of the daemon")
    clock = Clock()
    feedback = Feedback(settings_for(tmp_path, command=hook(tmp_path, ENV_WRITER)), monotonic=clock)
    feedback.start()
    feedback.recorded(tap())
    clock.now = 0.4
    feedback.answer(tap(), Delivered("Budi Santoso", "LATE"))
    assert feedback.wait_idle(WAIT_S)
    feedback.close()
    runs = [json.loads(line) for line in (tmp_path / "hook.py.out").read_text().splitlines()]
    assert [run["FEEDBACK_OUTCOME"] for run in runs] == ["recorded", "late"]
    assert runs[1]["FEEDBACK_CARD_NO"] == "0012822001"
    assert runs[1]["FEEDBACK_READER"] == "desk"
    assert runs[1]["FEEDBACK_ATTENDANCE_STATUS"] == "LATE"
    assert runs[1]["FEEDBACK_STUDENT_NAME"] == "Budi Santoso"
    for run in runs:
        assert TOKEN not in json.dumps(run)
        assert "SOMETHING_ELSE" not in run


def test_command_env_passes_only_path_and_locale() -> None:
    from gateagent.core.feedback import Signal
    from gateagent.feedback import Event

    env = command_env(
        Event(Signal.UNREADABLE, "desk"),
        {"PATH": "/opt/bin", "LANG": "C.UTF-8", "GATEAGENT_UPLINK__TOKEN": TOKEN, "HOME": "/"},
    )
    assert env == {
        "PATH": "/opt/bin",
        "LANG": "C.UTF-8",
        "FEEDBACK_OUTCOME": "unreadable",
        "FEEDBACK_READER": "desk",
        "FEEDBACK_CARD_NO": "",
        "FEEDBACK_ATTENDANCE_STATUS": "",
        "FEEDBACK_STUDENT_NAME": "",
    }


HELD = """
import json, os, sys
with open(sys.argv[1], "w") as heard:  # a FIFO the test reads: this run has begun
    heard.write(json.dumps({"FEEDBACK_OUTCOME": os.environ["FEEDBACK_OUTCOME"]}) + "\\n")
open(sys.argv[2]).close()  # a FIFO: waits until the test opens it for writing
"""


def test_a_busy_command_never_blocks_a_tap(tmp_path: Path) -> None:
    heard = Heard(tmp_path / "heard.fifo")
    release = tmp_path / "release.fifo"
    os.mkfifo(release)
    command = f"{hook(tmp_path, HELD)} {tmp_path / 'heard.fifo'} {release}"
    feedback = Feedback(settings_for(tmp_path, command=command, command_timeout="60s"))
    feedback.start()
    released = None
    try:
        feedback.recorded(tap())
        assert heard.next() == {"FEEDBACK_OUTCOME": "recorded"}  # and it waits for `release`
        # 20 more taps while that command still runs (only the test ends it): each call
        # returns at once, the queue keeps a few signals and drops the rest.
        taps = threading.Thread(target=lambda: [feedback.recorded(tap()) for _ in range(20)])
        taps.start()
        taps.join(WAIT_S)
        assert not taps.is_alive(), "a tap waited for the feedback command"
        released = os.open(release, os.O_RDWR | os.O_NONBLOCK)  # every run may end now
        assert feedback.wait_idle(WAIT_S)
        queued = [heard.next() for _ in range(QUEUE_MAX)]
        assert queued == [{"FEEDBACK_OUTCOME": "recorded"}] * QUEUE_MAX
        assert heard.rest() == []  # the other 16 were dropped
    finally:
        if released is None:  # failed: the runs still waiting end too
            released = os.open(release, os.O_RDWR | os.O_NONBLOCK)
        feedback.close()
        heard.close()
        os.close(released)


def test_a_hanging_command_is_killed_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    command = hook(tmp_path, "import time\ntime.sleep(30)\n")
    feedback = Feedback(settings_for(tmp_path, command=command, command_timeout="300ms"))
    feedback.start()
    for _ in range(3):
        feedback.recorded(tap())
    assert feedback.wait_idle(WAIT_S)  # each killed after 0.3 s
    feedback.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, not per run
    assert "killed after 0.3 s" in warnings[0]


def test_a_failing_command_is_reported_with_its_last_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    command = hook(tmp_path, "import sys\nsys.exit('display not found')\n")
    feedback = Feedback(settings_for(tmp_path, command=command))
    feedback.start()
    feedback.unreadable("desk")
    assert feedback.wait_idle(WAIT_S)
    feedback.close()
    assert "status=1 stderr='display not found'" in caplog.text


# -- the reader's keyboard LED (evdev seam) ---------------------------------------------


class LedDevice:
    """Stands in for `evdev.InputDevice` (no /dev/input here): records what is written."""

    def __init__(self, writes: list[tuple[int, int, int]], fail: bool = False) -> None:
        self.writes = writes
        self.fail = fail
        self.closed = False

    def write(self, etype: int, code: int, value: int) -> None:
        if self.fail:
            raise OSError(19, "No such device")
        self.writes.append((etype, code, value))

    def close(self) -> None:
        self.closed = True


HID = {"name": "gate", "kind": "hid", "path": "/dev/input/event3", "feedback_led": "capslock"}


def hid_settings(tmp_path: Path) -> Config:
    readers = [{"name": "desk", "kind": "stdin"}, HID]
    return make_settings(tmp_path, "http://127.0.0.1:9/", readers=readers)  # type: ignore[arg-type]


def test_the_readers_caps_lock_blinks_for_its_own_taps(tmp_path: Path) -> None:
    writes: list[tuple[int, int, int]] = []
    opened: list[str] = []

    def open_device(path: str) -> LedDevice:
        opened.append(path)
        return LedDevice(writes)

    feedback = Feedback(hid_settings(tmp_path), open_device=open_device)
    feedback.start()
    feedback.recorded(tap(reader="desk"))  # another reader's tap: not this LED
    assert feedback.wait_idle(WAIT_S)
    assert writes == []
    feedback.unreadable("gate")
    assert feedback.wait_idle(WAIT_S)
    feedback.close()
    led = [(ecodes.EV_LED, ecodes.LED_CAPSL, value) for value in (1, 0, 1, 0, 1, 0)]
    syn = (ecodes.EV_SYN, ecodes.SYN_REPORT, 0)
    assert writes == [item for pair in zip(led, [syn] * 6, strict=True) for item in pair]
    assert opened == ["/dev/input/event3"]  # opened once, kept open


def test_an_unplugged_reader_led_warns_once_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writes: list[tuple[int, int, int]] = []
    caplog.set_level(logging.INFO, "gateagent.feedback")
    # Unplugged for the first signal's lit steps (each tries to open it again), back after.
    devices = [LedDevice(writes, fail=True), LedDevice(writes, fail=True), LedDevice(writes)]

    feedback = Feedback(hid_settings(tmp_path), open_device=lambda path: devices.pop(0))
    feedback.start()
    feedback.recorded(tap(reader="gate"))
    assert feedback.wait_idle(WAIT_S)
    feedback.recorded(tap(reader="gate"))
    assert feedback.wait_idle(WAIT_S)
    feedback.close()
    failed = [r for r in caplog.records if "feedback output failed" in r.getMessage()]
    assert len(failed) == 1
    assert "reader gate capslock" in failed[0].getMessage()
    assert "feedback output works again output=reader gate capslock" in caplog.text
    assert (ecodes.EV_LED, ecodes.LED_CAPSL, 1) in writes


def test_a_reload_never_waits_for_the_old_outputs(tmp_path: Path) -> None:
    writes: list[tuple[int, int, int]] = []
    happened: list[str] = []
    returned = threading.Event()

    class SlowToClose(LedDevice):
        def close(self) -> None:
            happened.append("old closing")
            # Until the reload has returned: a reload that waited for this close would
            # only get past here by the safety net.
            happened.append("old closed" if returned.wait(WAIT_S) else "old closed late")

    devices = [SlowToClose(writes), LedDevice(writes)]

    def open_device(path: str) -> LedDevice:
        happened.append("opened")
        return devices.pop(0)

    old = Feedback(hid_settings(tmp_path), open_device=open_device)
    old.start()
    old.recorded(tap(reader="gate"))
    assert old.wait_idle(WAIT_S)
    new = old.replaced(hid_settings(tmp_path))
    returned.set()
    new.recorded(tap(reader="gate"))
    assert new.wait_idle(WAIT_S)
    new.close()
    # The new LED opened once the old one was released (the same device node).
    assert happened == ["opened", "old closing", "old closed", "opened"]
    assert writes.count((ecodes.EV_LED, ecodes.LED_CAPSL, 1)) == 2


# -- gateagent check ----------------------------------------------------------------------


def test_check_beeps_and_blinks_each_output(tmp_path: Path, factory: MockFactory) -> None:
    settings = settings_for(tmp_path, **PINS, command=hook(tmp_path, ENV_WRITER))
    results = list(check_outputs(settings, pin_factory=factory, sleep=lambda s: None))
    assert results == [
        ("feedback gpio (buzzer_pin GPIO17, green_pin GPIO27, red_pin GPIO22)", None),
        (f"feedback command {sys.executable}", None),
    ]
    assert [s for s, _ in history(factory, BUZZER)] == [True, False]
    assert [s for s, _ in history(factory, GREEN)] == [True, False]
    assert [s for s, _ in history(factory, RED)] == [True, False]


def test_check_names_a_pin_it_cannot_have(tmp_path: Path, factory: MockFactory) -> None:
    holder = LED(RED, pin_factory=factory)
    results = list(check_outputs(settings_for(tmp_path, red_pin=RED), pin_factory=factory))
    holder.close()
    assert len(results) == 1
    assert results[0][0] == "feedback gpio (red_pin GPIO22)"
    assert str(results[0][1]).startswith("GPIOPinInUse: pin GPIO22 is already in use")


# -- [feedback] in the configuration ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        (
            "[feedback]\nbuzzer_pin = 17\ngreen_pin = 17\n",
            "[feedback] green_pin",
            "GPIO17 is already buzzer_pin",
        ),
        ("[feedback]\nred_pin = 40\n", "[feedback] red_pin", "less than or equal to 27"),
        ('[feedback]\nverdict_within = "2x"\n', "[feedback] verdict_within", "is not a duration"),
        (
            '[feedback]\ncommand = "\'unclosed"\n',
            "[feedback] command",
            "cannot be split into words",
        ),
        ('[feedback]\ncommand = " "\n', "[feedback] command", "is empty"),
        ("[feedback]\nbuzer_pin = 17\n", "[feedback] buzer_pin", "did you mean 'buzzer_pin'?"),
    ],
    ids=["same-pin", "no-such-pin", "duration", "quotes", "empty-command", "typo"],
)
def test_bad_feedback_config_is_one_line(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    from gateagent import config
    from gateagent.errors import ConfigError
    from tests.test_config import GOOD, write

    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, GOOD + extra))
    assert (caught.value.key, reason in caught.value.reason) == (key, True), caught.value.reason


def test_feedback_led_is_for_hid_readers_only(tmp_path: Path) -> None:
    from gateagent import config
    from gateagent.errors import ConfigError
    from tests.test_config import GOOD, replaced, write

    text = replaced('protocol = "rdm6300"', 'protocol = "rdm6300"\nfeedback_led = "capslock"')
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text))
    assert caught.value.key == "[[readers]] #1 (entrance) feedback_led"
    assert caught.value.reason == "is for hid readers only"
    hid = replaced('direction = "out"', 'direction = "out"\nfeedback_led = "capslock"', GOOD)
    assert config.load(write(tmp_path, hid)).readers[1].feedback_led == "capslock"


def test_gateagent_check_lines(
    tmp_path: Path, factory: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpiozero import Device

    from gateagent.check import feedback_outputs

    monkeypatch.setattr(Device, "pin_factory", factory)  # as gpiozero picks the Pi's own
    settings = settings_for(tmp_path, buzzer_pin=BUZZER, command=hook(tmp_path, ENV_WRITER))
    assert [result.line() for result in feedback_outputs(settings)] == [
        "OK    feedback gpio (buzzer_pin GPIO17): beeped and blinked",
        f"OK    feedback command {sys.executable}: ran (FEEDBACK_OUTCOME=recorded)",
    ]
    assert [s for s, _ in history(factory, BUZZER)] == [True, False]
    assert list(feedback_outputs(settings_for(tmp_path))) == []  # nothing configured
