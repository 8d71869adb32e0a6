"""The clock seam: wall time, monotonic time, boot id and whether the wall clock is right.

SPEC "Time": most Raspberry Pis have no battery-backed clock, so after a power cut the
wall clock restarts from the last saved time until NTP synchronizes it. Every tap
therefore stores its UTC wall time, a monotonic time, the boot id and whether the clock
was synchronized; a tap taken while unsynchronized is corrected later in the same boot
(`gateagent.core.clockfix.correct`).

- Monotonic time is CLOCK_BOOTTIME, not CLOCK_MONOTONIC: both are system-wide since
  boot (so comparable across restarts of the daemon within one boot, which is what the
  correction needs), but CLOCK_BOOTTIME keeps counting while the system is suspended,
  so the time between a tap and the sync is the real elapsed time.
- The boot id (`/proc/sys/kernel/random/boot_id`, a UUID new at every boot) tells
  whether two monotonic readings can be compared at all.
- Synchronized means systemd-timesyncd's flag file exists, or the kernel's NTP state
  (adjtimex(2), read-only) is not TIME_ERROR; the latter covers chrony and ntpd, which
  clear STA_UNSYNC once they discipline the clock.

Everything else takes a `Clock`, so tests drive time with `tests.fakes.FakeClock`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
# systemd-timesyncd.service(8): touched each time the clock has been synchronized.
SYNC_FLAG_PATH = Path("/run/systemd/timesync/synchronized")

# adjtimex(2) return values: TIME_OK, TIME_INS, TIME_DEL, TIME_OOP, TIME_WAIT are states
# of a synchronized clock (the last four around a leap second); TIME_ERROR means the
# clock is not synchronized (STA_UNSYNC set, or the PLL lost its reference).
TIME_ERROR = 5

# struct timex is 208 bytes on 64-bit Linux (glibc and the kernel's __kernel_timex) and
# smaller on 32-bit armhf. The kernel copies the whole struct back to us, so the buffer
# must be at least that big; 512 leaves room for any layout we do not know of (32-bit
# time64 variants, future fields). Only `modes`, the first field, is read by the kernel
# for a read-only call, and zero means "change nothing".
_TIMEX_BUFFER_BYTES = 512


class Clock(Protocol):
    def now_utc(self) -> datetime:
        """The wall clock, aware, in UTC (possibly wrong until synchronized)."""
        ...

    def now_mono(self) -> float:
        """Seconds since boot, counting suspend; comparable only within one boot id."""
        ...

    def boot_id(self) -> str:
        """An id of the current boot (a UUID on Linux)."""
        ...

    def synchronized(self) -> bool:
        """True if the wall clock is known to be right (synchronized by NTP)."""
        ...


@functools.cache
def _libc_adjtimex() -> Callable[[ctypes.Array[ctypes.c_char]], int] | None:
    try:
        # dlopen(NULL): the process's global symbols, which include libc's on Linux
        # (glibc and musl) without guessing the library's file name.
        function = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_char_p]
    function.restype = ctypes.c_int
    return function


def adjtimex_state() -> int:
    """The kernel's clock state from a read-only adjtimex(2): 0..5, or -1 on failure."""
    adjtimex = _libc_adjtimex()
    if adjtimex is None:
        log.debug("adjtimex unavailable: no such function in libc")
        return -1
    # Zeroed, so `modes` (the first field) is 0: a pure read, no privilege needed.
    buffer = ctypes.create_string_buffer(_TIMEX_BUFFER_BYTES)
    state = adjtimex(buffer)
    if state == -1:
        log.debug("adjtimex failed errno=%d", ctypes.get_errno())
    return state


class SystemClock:
    """The machine's clocks (Linux)."""

    def __init__(
        self,
        *,
        sync_flag: Path = SYNC_FLAG_PATH,
        adjtimex: Callable[[], int] | None = None,
        boot_id_path: Path = BOOT_ID_PATH,
    ) -> None:
        """`adjtimex` replaces the real adjtimex(2) call in tests; None means the real one."""
        self._sync_flag = sync_flag
        self._adjtimex = adjtimex_state if adjtimex is None else adjtimex
        self._boot_id_path = boot_id_path
        self._boot_id: str | None = None

    def now_utc(self) -> datetime:
        return datetime.now(UTC)

    def now_mono(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def boot_id(self) -> str:
        # Constant for the life of the process; read once. An unreadable file is an
        # error, not a default: a wrong boot id would let taps of another boot be
        # "corrected" with this boot's monotonic clock.
        if self._boot_id is None:
            self._boot_id = self._boot_id_path.read_text(encoding="ascii").strip()
        return self._boot_id

    def synchronized(self) -> bool:
        try:
            if self._sync_flag.exists():
                return True
        except OSError as error:
            log.debug("sync flag unreadable path=%s error=%s", self._sync_flag, error)
        try:
            state = self._adjtimex()
        except OSError as error:
            log.debug("adjtimex failed error=%s", error)
            return False
        return 0 <= state < TIME_ERROR
