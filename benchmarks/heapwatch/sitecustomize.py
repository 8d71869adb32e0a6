"""Put into `gateagent run` by `benchmarks/longrun.py --heap FILE` (on its PYTHONPATH):
every 10 s one line to FILE with RSS's anonymous part beside glibc's heaps (mallinfo2:
the bytes in use and the free bytes the heaps keep), SQLite's own memory, Python's
allocated blocks and threads, the anonymous mappings' RSS by kind (`_anon_by_kind`) and
pymalloc's arenas, which tells a leak from memory the allocator keeps, and which heap
grew; every minute a census of the gc-tracked objects (`_census`), and with
HEAPWATCH_TRACE=1 the source lines whose Python allocations grew (`_traced`). glibc
only. To see what made a heap grow, run the daemon under
`strace --seccomp-bpf -f -k -e trace=brk,mprotect`: each brk(2) that raises the main
heap, each mprotect(2) that widens another, with its C stack (issue 14 found the
metrics' sort, SQLite's page caches and the scheduler's sets so)."""

import ctypes
import gc
import itertools
import os
import sys
import threading
import time
import tracemalloc
from collections import deque


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _anon_by_kind() -> str:
    """RSS of the anonymous mappings in /proc/self/smaps by what they most likely are:
    brk (glibc's main heap), 64 MiB-aligned (glibc's other heaps), 1 MiB (pymalloc's
    arenas), 8 MiB + a guard page (thread stacks), and the rest (large mallocs). A guess:
    the kernel merges adjacent anonymous mappings, so neighbouring pymalloc arenas count
    as "other"; `_pymalloc` has their true number."""
    kinds = dict.fromkeys(("brk", "arenas64", "pymalloc", "stacks", "other"), 0)
    counts = dict.fromkeys(kinds, 0)
    kind = ""
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else ""
                size = end - start
                if name == "[heap]":
                    kind = "brk"
                elif name or "rw" not in head[1]:
                    kind = ""
                elif start % (64 << 20) == 0:
                    kind = "arenas64"
                elif size == 1 << 20:
                    kind = "pymalloc"
                elif size in (8 << 20, (8 << 20) + 4096):
                    kind = "stacks"
                else:
                    kind = "other"
                if kind:
                    counts[kind] += 1
            elif kind and head[0] == "Rss:":
                kinds[kind] += int(head[1])
    return ", ".join(f"{k} {kinds[k] / 1024:.1f} MB/{counts[k]}" for k in kinds)


def _pymalloc(libc: ctypes.CDLL, scratch: str) -> str:
    """pymalloc's arenas and how full they are, from _PyObject_DebugMallocStats."""
    out = libc.fopen(scratch.encode(), b"w")
    ctypes.pythonapi._PyObject_DebugMallocStats(ctypes.c_void_p(out))
    libc.fclose(ctypes.c_void_p(out))
    stats = {}
    with open(scratch) as text:
        for line in text:
            if "=" in line and line.startswith("#"):
                key, _, value = line.partition("=")
                stats[key.strip("# ").strip()] = int(value.strip().replace(",", ""))
    if not stats:
        return "pymalloc arenas unknown (tracemalloc hides them)"
    return (
        f"pymalloc arenas {stats['arenas allocated current']}"
        f" (high {stats['arenas highwater mark']}), blocks {stats['bytes in allocated blocks'] / 1e6:.1f}"
        f" MB, free in pools {stats['bytes in available blocks'] / 1e6:.1f} MB"
    )


def _owner(container: object) -> str:
    """`Class.attribute` of the object holding `container`, else its type. An object's
    attributes are its own referents, or those of its `__dict__` once one was made."""
    for holder in gc.get_referrers(container):
        if isinstance(holder, dict):
            owners = [h for h in gc.get_referrers(holder) if getattr(h, "__dict__", None) is holder]
            if not owners:
                continue
            attributes, kind = holder, type(owners[0]).__name__
        else:
            attributes, kind = getattr(holder, "__dict__", {}), type(holder).__name__
        for name, value in attributes.items():
            if value is container:
                return f"{kind}.{name}"
    return type(container).__name__


def _census(first: dict[str, int]) -> str:
    """The gc-tracked objects by type: the five types whose count grew most since the
    first census (`first`, filled on the first call), and the five biggest containers
    (by len), to tell a structure that grows from one that only swings."""
    counts: dict[str, int] = {}
    sizes: list[tuple[int, str]] = []
    for obj in gc.get_objects():
        kind = type(obj).__name__
        counts[kind] = counts.get(kind, 0) + 1
        if isinstance(obj, (dict, set, frozenset, list, deque)) and len(obj) >= 1000:
            sizes.append((len(obj), _owner(obj)))
    if not first:
        first.update(counts)
    grew = sorted(counts, key=lambda k: counts[k] - first.get(k, 0), reverse=True)[:5]
    return (
        "grew "
        + ", ".join(f"{k} {counts[k] - first.get(k, 0):+d}" for k in grew)
        + "; biggest "
        + ", ".join(f"{name} {n}" for n, name in sorted(sizes, reverse=True)[:5])
    )


def _traced(traced: list[tracemalloc.Snapshot]) -> str:
    """With HEAPWATCH_TRACE=1: the source lines whose Python allocations grew most since
    the first census (tracemalloc; the daemon runs slower)."""
    snapshot = tracemalloc.take_snapshot()
    if not traced:
        traced.append(snapshot)
    grew = snapshot.compare_to(traced[0], "lineno")[:6]
    return "; ".join(
        f"{stat.traceback[0].filename.rsplit('/', 2)[-1]}:{stat.traceback[0].lineno}"
        f" {stat.size_diff / 1e3:+.0f} kB"
        for stat in grew
    )


def _watch(path: str) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    libc.fopen.restype = ctypes.c_void_p
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    started = time.monotonic()
    first: dict[str, int] = {}
    traced: list[tracemalloc.Snapshot] = []
    with open(path, "w", buffering=1) as out:
        for n in itertools.count(1):
            time.sleep(10)
            if n % 6 == 0:  # every minute: a census holds the GIL for some 50 ms
                print(f"{time.monotonic() - started:.0f} s: {_census(first)}", file=out)
                if tracemalloc.is_tracing():
                    print(f"  {_traced(traced)}", file=out)
            with open("/proc/self/status") as status:
                anon = next(line for line in status if line.startswith("RssAnon:"))
            heap = libc.mallinfo2()
            print(
                f"{time.monotonic() - started:.0f} s: anon {int(anon.split()[1]) / 1024:.1f} MB;"
                f" malloc in use {heap.uordblks / 1e6:.1f} MB, free kept"
                f" {heap.fordblks / 1e6:.1f} MB; sqlite {sqlite.sqlite3_memory_used() / 1e6:.2f}"
                f" MB; python blocks {sys.getallocatedblocks()}; threads {threading.active_count()};"
                f" {_anon_by_kind()}; {_pymalloc(libc, path + '.stats')}",
                file=out,
            )


if "run" in sys.orig_argv and (_path := os.environ.get("HEAPWATCH_FILE")):
    if os.environ.get("HEAPWATCH_TRACE"):
        tracemalloc.start()
    threading.Thread(target=_watch, args=(_path,), name="heapwatch", daemon=True).start()
