"""Feedback at the gate: the signals of core/feedback.py on a buzzer, LEDs, a reader's
keyboard LEDs and a command (issue 15, README "Feedback at the gate").

    daemon: recorded(tap) / unreadable(reader) / answer(tap, outcome)   (never block)
        -> player thread: a pattern on the GPIO buzzer and LEDs and the reader's LED
        -> command thread: `[feedback] command`, one at a time, time-limited

Feedback never delays recording: the calls only put a signal in a small queue and
return, and a signal that finds the queue full is dropped (a person at the gate hears
the newest signal; a late one would only mislead). A newer signal interrupts the
pattern playing. The outputs are opened, and at a stop or reload switched off and
released, in the player's own thread: a GPIO slow to open or to close holds up that
thread only, never the event loop or the readers. An output that cannot be opened (no
GPIO, a pin in use, gpiozero missing) or stops working is one warning, and the daemon
goes on without it, as with an unplugged reader. gpiozero is imported only when a pin
is configured (Debian's python3-gpiozero on the Pi), evdev only for a reader's
`feedback_led`.

The command's environment is built from nothing but PATH and the locale: the daemon's
own environment may hold the token (GATEAGENT_UPLINK__TOKEN), which never reaches it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateagent.config import Feedback as Settings
from gateagent.config import Reader, ReadingConfig
from gateagent.core.answers import Delivered, Outcome
from gateagent.core.feedback import (
    PATTERNS,
    TEST_PATTERN,
    Light,
    Signal,
    Step,
    Unreadables,
    Verdicts,
    for_answer,
    for_tap,
)
from gateagent.store import Tap

log = logging.getLogger(__name__)

# Signals waiting for the player or the command: a few taps' worth. More means the
# output is slower than the taps, and the newest signals matter most.
QUEUE_MAX = 4
# The variables a command may need from ours; nothing else of our environment passes.
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# How long a player's outputs may take to be switched off and released, at stop and
# before a replacement opens the same pins; past it the gate goes on (a hung GPIO).
CLOSE_WAIT_S = 5.0
# evdev LED codes (linux/input-event-codes.h: LED_NUML 0, LED_CAPSL 1, LED_SCROLLL 2).
LED_CODES = {"numlock": 0, "capslock": 1, "scrolllock": 2}
EV_SYN, EV_LED, SYN_REPORT = 0x00, 0x11, 0


@dataclass(frozen=True)
class Event:
    """One signal for the person at the gate, and what a command is told of it."""

    signal: Signal
    reader: str = ""
    card_no: str = ""
    attendance_status: str = ""
    student_name: str = ""

    def env(self) -> dict[str, str]:
        return {
            "FEEDBACK_OUTCOME": self.signal.value,
            "FEEDBACK_READER": self.reader,
            "FEEDBACK_CARD_NO": self.card_no,
            "FEEDBACK_ATTENDANCE_STATUS": self.attendance_status,
            "FEEDBACK_STUDENT_NAME": self.student_name,
        }


class Output(Protocol):
    name: str
    reader: str | None  # the one reader whose signals it shows; None: every reader's

    def show(self, beep: bool, light: Light) -> None:
        """Set the output now; raises on a device problem (the player warns once)."""

    def close(self) -> None: ...


# -- outputs -----------------------------------------------------------------------------


class Gpio:
    """A buzzer and a green and a red LED on the Pi's GPIO (any of them)."""

    name = "gpio"
    reader: str | None = None

    def __init__(self, devices: Mapping[str, Any]) -> None:
        self._devices = dict(devices)

    @classmethod
    def open(cls, settings: Settings, pin_factory: object | None = None) -> Gpio | None:
        """The configured pins, or None (one warning) when they cannot be had."""
        opened = cls.attempt(settings, pin_factory)
        if isinstance(opened, str):
            log.warning(
                "feedback output unavailable: the gate goes on without it output=gpio"
                " pins=%s error=%s",
                ",".join(f"{key}={pin}" for key, pin in settings.pins().items()),
                opened,
            )
            return None
        return opened

    @classmethod
    def attempt(cls, settings: Settings, pin_factory: object | None = None) -> Gpio | str:
        """The configured pins, or why they cannot be had."""
        opened: dict[str, Any] = {}
        try:
            # Imported here: only a configured pin needs gpiozero (and its pin library).
            from gpiozero import LED, Buzzer  # noqa: PLC0415

            for key, pin in settings.pins().items():
                kind = Buzzer if key == "buzzer_pin" else LED
                opened[key] = kind(pin, pin_factory=pin_factory)
        except Exception as exc:  # ImportError, BadPinFactory, GPIOPinInUse, lgpio errors
            for device in opened.values():
                device.close()
            return f"{type(exc).__name__}: {exc}"
        return cls(opened)

    def show(self, beep: bool, light: Light) -> None:
        for key, on in (("buzzer_pin", beep), ("green_pin", light.green), ("red_pin", light.red)):
            device = self._devices.get(key)
            if device is not None and device.is_active != on:
                device.on() if on else device.off()

    def close(self) -> None:
        for device in self._devices.values():
            device.close()


class LedDevice(Protocol):
    """What the keyboard LED uses of `evdev.InputDevice` (the seam the tests fake)."""

    def write(self, etype: int, code: int, value: int) -> None: ...

    def close(self) -> None: ...


def _open_evdev(path: str) -> LedDevice:
    import evdev  # noqa: PLC0415 (only a reader's feedback_led needs it here)

    device: LedDevice = evdev.InputDevice(path)
    return device


class KeyboardLed:
    """Experimental: one LED of a hid reader, where the reader shows its LED reports.

    Opened on its own (not grabbed): an evdev node takes writes from any of its open
    files, and the reader's thread keeps its grab. A write that fails (unplugged)
    closes it; the next signal opens the path again.
    """

    def __init__(
        self, reader: Reader, open_device: Callable[[str], LedDevice] = _open_evdev
    ) -> None:
        assert reader.path is not None and reader.feedback_led != "none"
        self.name = f"reader {reader.name} {reader.feedback_led}"
        self.reader: str | None = reader.name
        self._path = reader.path
        self._code = LED_CODES[reader.feedback_led]
        self._open_device = open_device
        self._device: LedDevice | None = None
        self._lit: bool | None = None

    def show(self, beep: bool, light: Light) -> None:
        lit = light is not Light.OFF
        if lit == self._lit:
            return
        try:
            if self._device is None:
                self._device = self._open_device(self._path)
            self._device.write(EV_LED, self._code, int(lit))
            self._device.write(EV_SYN, SYN_REPORT, 0)
        except OSError:
            self.close()
            raise
        self._lit = lit

    def close(self) -> None:
        device, self._device, self._lit = self._device, None, None
        if device is not None:
            try:
                device.close()
            except OSError as exc:  # a device already gone: its file is released anyway
                log.debug("closing a keyboard LED failed: %s", exc)


# -- the player and the command ----------------------------------------------------------


class Player:
    """Plays each signal's pattern on the outputs, in its own thread; a newer signal
    interrupts the one playing (it is what the person at the gate did last).

    The thread opens the outputs itself, and switches them off and releases them when
    it ends: a GPIO that is slow to open or to close (or hangs) holds up this thread
    only, never the caller's (the daemon's event loop). Signals asked for before the
    outputs are open wait in the queue and play once they are. `after`, a player being
    replaced, releases its outputs (the same pins, maybe) before this one opens its own.
    """

    def __init__(
        self,
        open_outputs: Callable[[], list[Output]],
        monotonic: Callable[[], float],
        after: Player | None = None,
    ) -> None:
        self._open_outputs = open_outputs
        self._outputs: list[Output] = []
        self._monotonic = monotonic
        self._after = after
        self._queue: queue.Queue[tuple[tuple[Step, ...], str] | None] = queue.Queue(QUEUE_MAX)
        self._stopping = threading.Event()
        self._failing: set[str] = set()
        # Signals asked for and taken by the thread, and whether a pattern plays: idle
        # when all are taken and none plays (`wait_idle`, for tests and `listen`).
        self._state = threading.Condition()
        self._asked = self._taken = 0
        self._playing = False
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def play(self, steps: tuple[Step, ...], reader: str) -> bool:
        """From any thread, never blocking: False when the signal was dropped."""
        with self._state:
            try:
                self._queue.put_nowait((steps, reader))
            except queue.Full:
                return False
            self._asked += 1
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every signal asked for has been played out; False on timeout."""
        with self._state:
            return self._state.wait_for(
                lambda: self._taken == self._asked and not self._playing, timeout_s
            )

    def stop(self) -> None:
        """From any thread, never blocking: the thread switches the outputs off, releases
        them and ends; signals still queued are not played."""
        self._stopping.set()
        # A full queue wakes the thread anyway, and it sees `_stopping` at the next take.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def join(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for a stopped player's outputs to be released."""
        if self._thread.ident is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        if self._after is not None:
            self._after.join(CLOSE_WAIT_S)
            self._after = None
        self._outputs = self._open_outputs()
        try:
            self._play()
        finally:
            self._set(self._outputs, False, Light.OFF)
            for output in self._outputs:
                try:
                    output.close()
                except Exception as exc:  # a GPIO gone wrong: the process exit frees it
                    log.warning(
                        "feedback output not released output=%s error=%s",
                        output.name,
                        f"{type(exc).__name__}: {exc}",
                    )

    def _play(self) -> None:
        steps: tuple[Step, ...] = ()
        targets: list[Output] = []
        index = 0
        until: float | None = None
        while True:
            timeout = None if until is None else max(0.0, until - self._monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                index += 1
                if index < len(steps):
                    until = self._step(targets, steps[index], until)
                else:
                    self._set(targets, False, Light.OFF)
                    until = None
                    with self._state:
                        self._playing = False
                        self._state.notify_all()
                continue
            if item is None or self._stopping.is_set():
                return
            with self._state:
                self._taken += 1
                self._playing = True
            steps, reader = item
            now_targets = [o for o in self._outputs if o.reader in (None, reader)]
            self._set([o for o in targets if o not in now_targets], False, Light.OFF)
            targets, index = now_targets, 0
            until = self._step(targets, steps[0], self._monotonic())

    def _step(self, targets: list[Output], step: Step, start: float | None) -> float:
        self._set(targets, step.beep, step.light)
        # From the step's planned start: a late wake-up does not stretch the pattern.
        return (start if start is not None else self._monotonic()) + step.seconds

    def _set(self, targets: list[Output], beep: bool, light: Light) -> None:
        for output in targets:
            try:
                output.show(beep, light)
            except Exception as exc:  # a GPIO or an LED that stopped working
                if output.name not in self._failing:
                    self._failing.add(output.name)
                    log.warning(
                        "feedback output failed: the gate goes on without it output=%s error=%s",
                        output.name,
                        f"{type(exc).__name__}: {exc}",
                    )
            else:
                if output.name in self._failing:
                    self._failing.discard(output.name)
                    log.info("feedback output works again output=%s", output.name)


def command_env(event: Event, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's whole environment: PATH, the locale and the event, nothing else."""
    environ = os.environ if environ is None else environ
    passed = {name: environ[name] for name in PASSED_ENV if name in environ}
    return {"PATH": DEFAULT_PATH, **passed, **event.env()}


class Command:
    """`[feedback] command`, run for each signal in its own thread, one at a time and
    at most `timeout_s` each (then killed); signals arriving meanwhile wait, a few."""

    def __init__(self, command: str, timeout_s: float) -> None:
        self._argv = shlex.split(command)
        self._timeout_s = timeout_s
        self._queue: queue.Queue[Event | None] = queue.Queue(QUEUE_MAX)
        self._failing = False
        self._state = threading.Condition()
        self._asked = self._finished = 0
        self._thread = threading.Thread(target=self._run, name="feedback-command", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run(self, event: Event) -> bool:
        with self._state:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                return False
            self._asked += 1
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        with self._state:
            return self._state.wait_for(lambda: self._finished == self._asked, timeout_s)

    def close(self) -> None:
        # Not joined: a command still running ends by its timeout, and the daemon's
        # stop does not wait for it.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            problem = run_command(self._argv, event, self._timeout_s)
            if problem is not None and not self._failing:
                log.warning("feedback command failed command=%s %s", self._argv[0], problem)
            elif problem is None and self._failing:
                log.info("feedback command works again command=%s", self._argv[0])
            self._failing = problem is not None
            with self._state:
                self._finished += 1
                self._state.notify_all()


def run_command(argv: list[str], event: Event, timeout_s: float) -> str | None:
    """Run the command once; why it failed, or None."""
    try:
        done = subprocess.run(
            argv,
            env=command_env(event),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"error=killed after {timeout_s:g} s"
    except OSError as exc:
        return f"error={exc.strerror or exc}"
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return f"status={done.returncode} stderr={lines[-1][:200] if lines else '-'!r}"
    return None


# -- what the daemon calls -----------------------------------------------------------------


class Feedback:
    """The daemon's one handle: `recorded`, `unreadable` and `answer` never block."""

    def __init__(
        self,
        settings: ReadingConfig,
        *,
        pin_factory: object | None = None,
        open_device: Callable[[str], LedDevice] = _open_evdev,
        monotonic: Callable[[], float] = time.monotonic,
        after: Feedback | None = None,
    ) -> None:
        """Opens nothing: the outputs are opened by the player's thread once started
        (see `Player`), after `after`'s (the Feedback this one replaces) are released."""
        feedback = settings.feedback
        self.settings = settings
        # What a reload compares: the keyboard LEDs of the readers.
        self.leds = [(r.name, r.path, r.feedback_led) for r in settings.readers]
        self._pin_factory = pin_factory
        self._open_device = open_device
        self._monotonic = monotonic
        self._verdicts = Verdicts(feedback.verdict_within)
        # Shared by the reader threads, each of which may report an unreadable read.
        self._unreadables = Unreadables()
        self._unreadables_lock = threading.Lock()
        leds: list[Output] = [
            KeyboardLed(reader, open_device)
            for reader in settings.readers
            if reader.feedback_led != "none"
        ]

        def open_outputs() -> list[Output]:
            gpio = Gpio.open(feedback, pin_factory) if feedback.pins() else None
            return leds if gpio is None else [gpio, *leds]

        # The pins keep real time (a pattern's steps are waits); `monotonic` is the
        # verdict window's clock, which tests step by hand.
        previous = after._player if after is not None else None
        self._player: Player | None = (
            Player(open_outputs, time.monotonic, previous) if feedback.pins() or leds else None
        )
        self._command = (
            Command(feedback.command, feedback.command_timeout) if feedback.command else None
        )
        self._dropped = 0

    @property
    def enabled(self) -> bool:
        return self._player is not None or self._command is not None

    def wait_idle(self, timeout_s: float) -> bool:
        """Every signal so far played out and its command run (tests, `listen`)."""
        deadline = time.monotonic() + timeout_s
        played = self._player is None or self._player.wait_idle(timeout_s)
        left = max(0.0, deadline - time.monotonic())
        return played and (self._command is None or self._command.wait_idle(left))

    def start(self) -> None:
        if self._player is not None:
            self._player.start()
        if self._command is not None:
            self._command.start()

    def close(self) -> None:
        """Stop, and wait (a few seconds at most) until the outputs are off and released."""
        self.stop()
        if self._player is not None:
            self._player.join(CLOSE_WAIT_S)

    def stop(self) -> None:
        """Never blocks: the outputs are switched off and released in their own thread."""
        if self._player is not None:
            self._player.stop()
        if self._command is not None:
            self._command.close()

    def replaced(self, settings: ReadingConfig) -> Feedback:
        """A reload's Feedback for `settings`, started, this one stopped; never blocks
        (the event loop calls it): the new outputs open in their thread once these are
        released."""
        new = Feedback(
            settings,
            pin_factory=self._pin_factory,
            open_device=self._open_device,
            monotonic=self._monotonic,
            after=self,
        )
        self.stop()
        new.start()
        return new

    def recorded(self, tap: Tap) -> None:
        """A tap committed (on the loop, after the commit: SPEC's "recorded")."""
        if not self.enabled:
            return  # no output and no command: nothing to work out (29k instructions)
        signal = for_tap(tap.state, tap.reason)
        if signal is Signal.RECORDED:
            self._verdicts.expect(tap.tap_id, self._monotonic())
        self._signal(Event(signal, tap.reader, tap.card_no))

    def unreadable(self, reader: str) -> None:
        """A read that is not a card number, or that a reader dropped as garbage (from a
        reader's thread): signalled once per burst (core/feedback.py `Unreadables`)."""
        with self._unreadables_lock:
            if not self._unreadables.signal(reader, self._monotonic()):
                return
        self._signal(Event(Signal.UNREADABLE, reader))

    def answer(self, tap: Tap, outcome: Outcome) -> None:
        """A server's answer for `tap` (on the loop): a verdict only if still in time."""
        if not self.enabled:
            return
        signal = for_answer(outcome)
        if signal is None or not self._verdicts.take(tap.tap_id, self._monotonic()):
            return
        status = name = ""
        if isinstance(outcome, Delivered):
            status = outcome.attendance_status or ""
            name = outcome.student_name or ""
        self._signal(Event(signal, tap.reader, tap.card_no, status, name))

    def sound(self, signal: Signal, reader: str, card_no: str = "") -> None:
        """Play `signal` as if a tap had given it (`gateagent listen --feedback`)."""
        self._signal(Event(signal, reader, card_no))

    def _signal(self, event: Event) -> None:
        played = self._player is None or self._player.play(PATTERNS[event.signal], event.reader)
        ran = self._command is None or self._command.run(event)
        if not (played and ran):
            self._dropped += 1
            log.debug("feedback signal dropped signal=%s dropped=%d", event.signal, self._dropped)


def check_outputs(
    settings: ReadingConfig,
    *,
    pin_factory: object | None = None,
    open_device: Callable[[str], LedDevice] = _open_evdev,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[str, str | None]]:
    """`gateagent check`: a short beep and a blink of each configured output, and the
    command run once (FEEDBACK_OUTCOME=recorded, FEEDBACK_READER=check); (output, why
    it failed or None)."""
    feedback = settings.feedback
    if pins := feedback.pins():
        gpio = Gpio.attempt(feedback, pin_factory)
        shown = ", ".join(f"{key} GPIO{pin}" for key, pin in pins.items())
        yield f"feedback gpio ({shown})", gpio if isinstance(gpio, str) else _try(gpio, sleep)
    for reader in settings.readers:
        if reader.feedback_led != "none":
            led = KeyboardLed(reader, open_device)
            yield f"feedback {led.name}", _try(led, sleep)
    if feedback.command:
        event = Event(Signal.RECORDED, "check", "")
        argv = shlex.split(feedback.command)
        problem = run_command(argv, event, feedback.command_timeout)
        yield f"feedback command {argv[0]}", problem


def _try(output: Output, sleep: Callable[[float], None]) -> str | None:
    try:
        for step in TEST_PATTERN:
            output.show(step.beep, step.light)
            sleep(step.seconds)  # the pattern's own timing: a person watches it
        output.show(False, Light.OFF)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        output.close()
    return None
