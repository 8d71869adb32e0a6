"""A `gateagent run` subprocess for tests: its stdin is the reader, its log is read as
it comes (not part of the package)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO


class Run:
    """A `gateagent run` subprocess with its stdin as the reader and stderr collected."""

    def __init__(self, config: Path, journal: bool = False) -> None:
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        if journal:
            # As systemd does: JOURNAL_STREAM names the device:inode of the stderr it gave.
            stat = os.fstat(write_end)
            env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateagent", "run", "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            env=env,
        )
        os.close(write_end)
        self._stderr = os.fdopen(read_end, "rb")
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._collect, args=(self._stderr,), daemon=True)
        self._reader.start()

    def _collect(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()

    def tap(self, *cards: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{card}\n" for card in cards).encode())
        self.process.stdin.flush()

    def wait_for_line(self, pattern: str, count: int = 1, timeout_s: float = 20.0) -> list[str]:
        with self._changed:
            found: list[str] = []

            def enough() -> bool:
                found[:] = [line for line in self.lines if re.search(pattern, line)]
                return len(found) >= count

            if not self._changed.wait_for(enough, timeout_s):
                raise TimeoutError(f"{pattern!r} x{count} not seen in:\n" + "\n".join(self.lines))
            return found

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout_s)
        self.close()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.close()

    def close(self) -> None:
        self._reader.join(10)
        self._stderr.close()
        if self.process.stdin is not None:
            self.process.stdin.close()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


def states(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT card_no, state FROM taps ORDER BY seq").fetchall()
    finally:
        conn.close()
