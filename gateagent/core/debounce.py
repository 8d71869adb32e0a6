"""Debounce: tell a new tap from the same card presentation read again.

SPEC "Tap decisions": a card read again within `debounce` of its previous read, by any
reader of this device, is the same presentation. The window slides with every read, so a
card held on a reader that repeats its frame (RDM6300: about every 100 ms) stays one tap.

Time is the caller's monotonic clock. It should never go backwards; if it does (a caller
mixing clocks), a read is taken as a new tap rather than suppressed: a duplicate tap is
at worst ignored by the direction rules or an extra check-out, a suppressed one is lost.
"""

import math
from collections import OrderedDict


class Debouncer:
    """Remembers each card's last read while it is within the window, and no longer."""

    def __init__(self, window_s: float) -> None:
        self._window_s = _checked_window(window_s)
        # card_no -> time of its last read, in order of reads: with a clock that does
        # not go backwards the oldest read is first, so pruning stops at the first live one.
        self._last_read: OrderedDict[str, float] = OrderedDict()

    @property
    def window_s(self) -> float:
        return self._window_s

    def set_window(self, window_s: float) -> None:
        """Apply a reloaded `[taps] debounce`; cards already seen keep their last read."""
        self._window_s = _checked_window(window_s)

    def seen(self, card_no: str, now_mono: float) -> bool:
        """Record a read of `card_no`; True if it repeats the same presentation."""
        last = self._last_read.pop(card_no, None)
        repeat = last is not None and self._live(last, now_mono)
        self._forget_expired(now_mono)
        self._last_read[card_no] = now_mono
        return repeat

    def __len__(self) -> int:
        """How many cards are remembered: the last one read and those read within the window."""
        return len(self._last_read)

    def __contains__(self, card_no: object) -> bool:
        return card_no in self._last_read

    def _live(self, last: float, now_mono: float) -> bool:
        # Strict "<", so a window of 0 turns debouncing off; a read "before" the
        # previous one (clock went backwards) is not live, so it cannot suppress.
        return 0 <= now_mono - last < self._window_s

    def _forget_expired(self, now_mono: float) -> None:
        reads = self._last_read
        if reads and not now_mono >= next(reversed(reads.values())):
            # The clock went backwards: read order is no longer time order, so sweep
            # everything once; afterwards the order holds again.
            self._last_read = OrderedDict(
                (c, t) for c, t in reads.items() if self._live(t, now_mono)
            )
            return
        # Amortised O(1): every read is inserted once and removed at most once.
        while reads and not self._live(next(iter(reads.values())), now_mono):
            reads.popitem(last=False)


def _checked_window(window_s: float) -> float:
    if not (math.isfinite(window_s) and window_s >= 0):
        raise ValueError(f"debounce window must be a finite number of seconds >= 0: {window_s!r}")
    return window_s
