"""gateagent subprocesses for tests: `Run` is `gateagent run` with its stdin as the
reader and its log read as it comes; `command()` runs any other subcommand. What they
print is kept for the secrets sweep (tests/secrets_sweep.py) (not part of the package)."""

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

from tests import secrets_sweep


class Run:
    """A `gateagent run` subprocess with its stdin as the reader and stderr collected.

    The log is also appended to `run.log` next to the config, line by line as it comes:
    the secrets sweep scans it at the end of the session even if the test never stopped
    the daemon, and it is there to read after a failure.
    """

    def __init__(self, config: Path, journal: bool = False, script: str | None = None) -> None:
        """`script`: Python code to run instead of `gateagent run`, with the config's path
        as its argument."""
        self._log = config.with_name("run.log").open("ab")
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        if journal:
            # As systemd does: JOURNAL_STREAM names the device:inode of the stderr it gave.
            stat = os.fstat(write_end)
            env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        run = (
            ["-c", script, str(config)]
            if script
            else ["-m", "gateagent", "run", "--config", str(config)]
        )
        self.process = subprocess.Popen(
            [sys.executable, *run],
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
        with self._log:
            for raw in stream:
                self._log.write(raw)
                self._log.flush()
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


def command(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """`gateagent ARGS...` to its end, its output captured and given to the secrets sweep."""
    done = subprocess.run(
        [sys.executable, "-m", "gateagent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    secrets_sweep.output(done.stdout, done.stderr)
    if check:
        done.check_returncode()
    return done


def states(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT card_no, state FROM taps ORDER BY seq").fetchall()
    finally:
        conn.close()
