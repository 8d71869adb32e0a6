"""Handing the C heap's free pages back to the system (issue 14's long run).

glibc keeps what Python, SQLite and httpcore free in its heaps, and gives memory back by
itself only from a heap's top (M_TRIM_THRESHOLD). A daemon whose working set moves about
(the scheduler's sets of cards, rebuilt each sweep; buffers; SQLite's pages) so holds
free pages in the middle of its heaps as RSS: 6 to 9 MB of them after 160,000 taps in
`benchmarks/longrun.py`, growing as the heaps fragment. `malloc_trim(0)` gives those
pages back (madvise MADV_DONTNEED) and keeps the address space; the next malloc there
faults in a zeroed page. It costs about 0.2 ms on such a heap and microseconds on one
trimmed already, so the daemon calls it at every housekeeping tick.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        # dlopen(NULL), as clock.py: libc's symbols without guessing its file name.
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl has none): nothing to trim this way
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim() -> bool:
    """Give the free pages of every malloc heap back; True if any were."""
    malloc_trim = _malloc_trim()
    return malloc_trim is not None and malloc_trim(0) == 1
