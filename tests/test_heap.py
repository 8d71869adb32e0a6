"""heap.trim(): the free pages in the middle of glibc's heap go back to the system."""

from __future__ import annotations

import json
import subprocess
import sys

# In a process of its own: 400 blocks of 64 KiB (under glibc's mmap threshold, so in the
# heap), every other one freed. The live ones between keep the free ones from merging
# into the heap's top, which glibc would give back by itself: 12.5 MiB of free pages
# stay resident until trimmed.
SCRIPT = """
import json
from gateagent import heap

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("RssAnon:"))

blocks = [bytearray(64 * 1024) for _ in range(400)]
del blocks[::2]
before = rss_kib()
trimmed = heap.trim()
after = rss_kib()
print(json.dumps({"trimmed": trimmed, "freed_kib": before - after}))
"""


def test_trim_gives_the_free_pages_between_live_blocks_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout)
    assert result["trimmed"] is True
    # 200 free blocks of 64 KiB: 15 whole pages of each lie inside a free chunk.
    assert result["freed_kib"] >= 200 * 15 * 4 * 0.9
