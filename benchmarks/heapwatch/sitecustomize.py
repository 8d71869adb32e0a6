"""Put into `gateagent run` by `benchmarks/longrun.py --heap FILE` (on its PYTHONPATH):
every 10 s one line to FILE with RSS's anonymous part beside glibc's heaps (mallinfo2:
the bytes in use and the free bytes the heaps keep), SQLite's own memory and Python's
allocated blocks, which tells a leak from memory the allocator keeps. glibc only."""

import ctypes
import os
import sys
import threading
import time


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _watch(path: str) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    started = time.monotonic()
    with open(path, "w", buffering=1) as out:
        while True:
            time.sleep(10)
            with open("/proc/self/status") as status:
                anon = next(line for line in status if line.startswith("RssAnon:"))
            heap = libc.mallinfo2()
            print(
                f"{time.monotonic() - started:.0f} s: anon {int(anon.split()[1]) / 1024:.1f} MB;"
                f" malloc in use {heap.uordblks / 1e6:.1f} MB, free kept"
                f" {heap.fordblks / 1e6:.1f} MB; sqlite {sqlite.sqlite3_memory_used() / 1e6:.2f}"
                f" MB; python blocks {sys.getallocatedblocks()}",
                file=out,
            )


if "run" in sys.orig_argv and (_path := os.environ.get("HEAPWATCH_FILE")):
    threading.Thread(target=_watch, args=(_path,), name="heapwatch", daemon=True).start()
