"""Runs INSIDE the power-cut VM as root, at every boot (benchmarks/power_cut.py).

First it prints what the database holds as the last power cut left it, read-only (so the
daemon still meets the -wal and the crash recovery itself): one line per cycle and state,
`DB cycle=C state=S n=N seqs=1-40,42`, then `DUMP END rows=R`. With `gateagent.mode=run`
on the kernel command line it then starts the endpoint simulator on 127.0.0.1:8080 and
`gateagent run` with its log on the serial console, and types cards into the daemon's
standard input, one to five at a time, about 12 a second, until the power goes (the
uplink keeps up with fewer, so a backlog is always being sent as well). Card numbers are
`CCCCSSSSSS`: the cycle (from `gateagent.cycle=C`) and the tap's sequence number in it,
so every tap has its own card number and the `tap recorded card_no=...` line names it.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import sqlite3
import struct
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from gateagent.simulator import Simulator

DATABASE = Path("/var/lib/gateagent/taps.db")
CONFIG = Path("/etc/gateagent/config.toml")
TOKEN = "power-cut-token"
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def say(line: str) -> None:
    print(line, flush=True)


def ranges(numbers: list[int]) -> str:
    """`1-40,42` for [1, ..., 40, 42]."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and spans[-1][1] == number - 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def dump() -> list[str]:
    """Print the database; its card numbers."""
    say("FILES " + " ".join(sorted(p.name for p in DATABASE.parent.iterdir())))
    if not DATABASE.exists():
        say("DUMP END rows=0")
        return []
    try:
        conn = sqlite3.connect(f"file:{DATABASE}?mode=ro", uri=True, timeout=10.0)
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
            rows = conn.execute("SELECT card_no, state FROM taps ORDER BY seq").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        say(f"DUMP ERROR {exc}")
        say("DUMP END rows=0")
        return []
    say("QUICK_CHECK " + "; ".join(str(row[0]) for row in check[:3]))
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for card_no, state in rows:
        groups[(int(card_no[:4]), state)].append(int(card_no[4:]))
    for (cycle, state), seqs in sorted(groups.items()):
        say(f"DB cycle={cycle} state={state} n={len(seqs)} seqs={ranges(seqs)}")
    say(f"DUMP END rows={len(rows)}")
    return [card_no for card_no, _ in rows]


def loopback_up() -> None:
    """`ip link set lo up`, which the VM's minimal Debian lacks."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def run(cycle: int, seed: int, cards: list[str]) -> None:
    loopback_up()
    rng = random.Random(seed * 100_003 + cycle)
    # The server knows every card: those still pending from earlier boots, and each new
    # one from before it is typed (the roster may change while it runs).
    roster = {card_no: f"Student {card_no}" for card_no in cards}
    simulator = Simulator(token=TOKEN, roster=roster, latency_s=0.005, port=8080)
    simulator.start()
    daemon = subprocess.Popen(
        ["/opt/venv/bin/gateagent", "run", "--config", str(CONFIG)], stdin=subprocess.PIPE
    )
    assert daemon.stdin is not None
    say(f"DAEMON LAUNCHED cycle={cycle}")
    seq = 0
    try:
        while True:
            burst = rng.choice((1, 1, 1, 1, 2, 5))
            lines = []
            for _ in range(burst):
                seq += 1
                card_no = f"{cycle:04d}{seq:06d}"
                simulator.roster[card_no] = f"Student {card_no}"
                lines.append(card_no + "\n")
            daemon.stdin.write("".join(lines).encode())
            daemon.stdin.flush()
            time.sleep(rng.uniform(0.0, 0.3))
    except BrokenPipeError:
        say(f"DAEMON EXITED code={daemon.wait()}")


def main() -> None:
    words = dict(
        word.split("=", 1) for word in Path("/proc/cmdline").read_text().split() if "=" in word
    )
    DATABASE.parent.mkdir(parents=True, exist_ok=True)
    cards = dump()
    if words.get("gateagent.mode") == "run":
        run(int(words["gateagent.cycle"]), int(words.get("gateagent.seed", "1")), cards)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
