"""USB keyboard-wedge (HID) reader: key events in, `Frame`/`Garbage` values out.

SPEC "Readers", `hid`: key-down events only; digits, keypad digits and A-F; Enter or
keypad Enter ends a card; a partial read is dropped after a 200 ms gap. The reader loop
passes each evdev event as `(code, value, timestamp)`, so this module needs no evdev
and no clock: the gap is measured on the event timestamps.
"""

from __future__ import annotations

from .frames import Frame, Garbage

__all__ = ["MAX_KEYS", "KeyDecoder"]

# Keycodes from linux/input-event-codes.h (the same values as evdev.ecodes).
KEY_1, KEY_2, KEY_3, KEY_4, KEY_5 = 2, 3, 4, 5, 6
KEY_6, KEY_7, KEY_8, KEY_9, KEY_0 = 7, 8, 9, 10, 11
KEY_A, KEY_B, KEY_C, KEY_D, KEY_E, KEY_F = 30, 48, 46, 32, 18, 33
KEY_ENTER = 28
KEY_KPENTER = 96
KEY_KP7, KEY_KP8, KEY_KP9 = 71, 72, 73
KEY_KP4, KEY_KP5, KEY_KP6 = 75, 76, 77
KEY_KP1, KEY_KP2, KEY_KP3, KEY_KP0 = 79, 80, 81, 82
KEY_LEFTSHIFT = 42
KEY_RIGHTSHIFT = 54

# linux/input.h, struct input_event.value for EV_KEY: release, press, autorepeat
VALUE_UP, VALUE_DOWN, VALUE_REPEAT = 0, 1, 2

CHARS: dict[int, str] = {
    KEY_1: "1", KEY_2: "2", KEY_3: "3", KEY_4: "4", KEY_5: "5",
    KEY_6: "6", KEY_7: "7", KEY_8: "8", KEY_9: "9", KEY_0: "0",
    KEY_KP1: "1", KEY_KP2: "2", KEY_KP3: "3", KEY_KP4: "4", KEY_KP5: "5",
    KEY_KP6: "6", KEY_KP7: "7", KEY_KP8: "8", KEY_KP9: "9", KEY_KP0: "0",
    # Readers type hex in either case; the keycode is the same, so this is upper case.
    KEY_A: "A", KEY_B: "B", KEY_C: "C", KEY_D: "D", KEY_E: "E", KEY_F: "F",
}  # fmt: skip
ENTERS = frozenset({KEY_ENTER, KEY_KPENTER})
# Wedges press Shift around capital letters; it carries no character of its own.
SHIFTS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})

# Twice the longest card number SPEC "Card numbers" accepts (32): more is a stuck or
# misconfigured reader, and the buffer must stay bounded.
MAX_KEYS = 64


class KeyDecoder:
    """Collects one card's keystrokes; `feed` returns a value when a read ends."""

    def __init__(self, gap_s: float = 0.2) -> None:
        self._gap_s = gap_s
        self._keys: list[str] = []  # bad keys kept as "<code>" so logs show them
        self._problem: str | None = None  # the first thing wrong with this read
        self._last_at: float | None = None
        # Events of this read were lost (see `lost`): it is garbage even with no key yet.
        self._spoiled = False

    def feed(self, keycode: int, value: int, at_s: float) -> Frame | Garbage | None:
        """One key event; returns the finished card, or the garbage a read became."""
        if value != VALUE_DOWN or keycode in SHIFTS:
            return None
        # A read has at most one result, so a timeout and the Enter that follows it
        # cannot both need reporting: an Enter on its own yields nothing.
        dropped = self.expire(at_s)
        self._last_at = at_s
        if keycode in ENTERS:
            finished = self._finish()
            return dropped if finished is None else finished
        if len(self._keys) >= MAX_KEYS:
            self._problem = self._problem or "too-long"
        elif keycode in CHARS:
            self._keys.append(CHARS[keycode])
        else:
            self._keys.append(f"<{keycode}>")
            self._problem = self._problem or "bad-key"
        return dropped

    def lost(self, at_s: float) -> Garbage | None:
        """The kernel dropped events (evdev's SYN_DROPPED: a card's 66 events overflow a
        client's 64 when the reader falls behind). Which keys went is unknown, so the
        read in progress, and what follows of it until Enter or the gap, is not a card:
        what is left of a number must never become a tap. Returns a read that had
        already timed out, as `feed` does."""
        dropped = self.expire(at_s)
        self._spoiled = True
        self._problem = "events-dropped"
        self._last_at = at_s
        return dropped

    def expire(self, now_s: float) -> Garbage | None:
        """Drop a partial read older than the gap; the reader calls this on a read timeout.

        `now_s` must be on the clock of the event timestamps.
        """
        started = self._keys or self._spoiled
        if started and self._last_at is not None and now_s - self._last_at > self._gap_s:
            dropped = Garbage(self._data(), "events-dropped" if self._spoiled else "timeout")
            self._reset()
            return dropped
        return None

    def _finish(self) -> Frame | Garbage | None:
        if not self._keys and not self._spoiled:
            return None
        result: Frame | Garbage
        if self._problem is not None:
            result = Garbage(self._data(), self._problem)
        else:
            result = Frame("".join(self._keys))
        self._reset()
        return result

    def _data(self) -> bytes:
        return "".join(self._keys).encode("ascii")

    def _reset(self) -> None:
        self._keys = []
        self._problem = None
        self._spoiled = False
