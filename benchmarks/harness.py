"""What the benchmark scripts share: a config file, a `gateagent run` subprocess, RSS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

TOKEN = "bench-token"


def write_config(
    folder: Path,
    url: str,
    readers: list[dict[str, str]] | None = None,
    feedback: dict[str, object] | None = None,
    **uplink: object,
) -> Path:
    """`readers` replaces the default two: `desk` on stdin and a serial reader that is not
    plugged in; `feedback` is the `[feedback]` table, if any."""
    settings = {"url": url, "token": TOKEN, "gate": 4, "flush_interval": "0s", "concurrency": 4}
    settings.update(uplink)
    if readers is None:
        readers = [
            {"name": "desk", "kind": "stdin"},
            {"name": "missing", "kind": "serial", "path": str(folder / "ttyUSB-not-plugged")},
        ]
    lines = [
        "[device]",
        'name = "bench"',
        "require_clock_sync = false",
        "[storage]",
        f'path = "{folder / "taps.db"}"',
        "[taps]",
        'debounce = "0s"',
        'min_checkout_after = "0s"',
        *(
            line
            for reader in readers
            for line in ["[[readers]]", *(f"{k} = {_toml(v)}" for k, v in reader.items())]
        ),
        "[uplink]",
        *(f"{key} = {_toml(value)}" for key, value in settings.items()),
        *(["[feedback]"] if feedback else []),
        *(f"{key} = {_toml(value)}" for key, value in (feedback or {}).items()),
    ]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


class Daemon:
    """`gateagent run` with a pipe as its stdin reader; counts its log lines as they come.

    `command` replaces `python -m gateagent run --config CONFIG` (e.g. the same under
    valgrind), `env` the environment."""

    def __init__(
        self,
        config: Path,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log = (config.parent / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "gateagent", "run", "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **unit_environment()} if env is None else env,
        )
        self.counts: dict[str, int] = {}
        # The latest line of each key (see wait()), e.g. what "gateagent started" said.
        self.last_line: dict[str, str] = {}
        self.recorded_cards: list[str] = []
        # When each card's first "tap recorded" line arrived (monotonic).
        self.recorded_at: dict[str, float] = {}
        self.log_lines = 0
        self.first_at: dict[str, float] = {}
        self.last_at: dict[str, float] = {}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            now = time.monotonic()
            self.log_lines += 1
            self.log.write(raw)
            match = re.search(
                rb"(gateagent started|tap recorded|tap delivered|tap rejected"
                rb"|reader (?:dis)?connected reader=\S+)",
                raw,
            )
            if match is None:
                continue
            key = match[1].decode()
            if key == "tap recorded":
                card = raw.split(b"card_no=")[1].split()[0].decode()
                self.recorded_cards.append(card)
                self.recorded_at.setdefault(card, now)
            with self._changed:
                self.last_line[key] = raw.decode(errors="replace").rstrip()
                self.counts[key] = self.counts.get(key, 0) + 1
                self.first_at.setdefault(key, now)
                self.last_at[key] = now
                self._changed.notify_all()

    def wait(self, key: str, count: int = 1, timeout_s: float = 3600.0) -> float:
        """Block until `count` lines of `key`; the monotonic time the last one arrived.

        Keys: `gateagent started`, `tap recorded`, `tap delivered`, `tap rejected`, and
        `reader connected reader=NAME` / `reader disconnected reader=NAME`."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.counts.get(key, 0) >= count, timeout_s):
                raise TimeoutError(f"{key}: {self.counts.get(key, 0)} of {count}")
            return self.last_at[key]

    def wait_recorded(self, cards: Iterable[str], timeout_s: float = 3600.0) -> None:
        """Block until every card of `cards` was logged as recorded."""
        wanted = set(cards)
        with self._changed:
            # recorded_at, not recorded_cards: a long run's list would be copied each wake.
            if not self._changed.wait_for(lambda: wanted <= self.recorded_at.keys(), timeout_s):
                missing = sorted(wanted - self.recorded_at.keys())
                raise TimeoutError(f"not recorded: {', '.join(missing)}")

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def rss_mb(self, field: str = "VmRSS") -> float:
        return rss_mb(self.process.pid, field)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(60)
        self._thread.join(10)
        self.log.close()
        for stream in (self.process.stdin, self.process.stderr):
            if stream is not None:
                stream.close()
        return code


def unit_environment() -> dict[str, str]:
    """The `Environment=` settings of systemd/gateagent.service (MALLOC_ARENA_MAX: what
    memory the daemon keeps depends on it), so a benchmark runs the daemon as the unit
    does."""
    unit = Path(__file__).resolve().parent.parent / "systemd" / "gateagent.service"
    settings = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            settings[key] = value
    return settings


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """`field` of /proc/PID/status in MB: VmRSS, or its parts RssAnon (the heap: Python's
    objects, malloc's arenas, SQLite's caches) and RssFile (mapped files: libraries, the
    WAL index)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample(every_s: float, probe: Callable[[], float], stop: threading.Event) -> list[float]:
    """Call `probe` every `every_s` in a thread until `stop`; the values."""
    values: list[float] = []

    def run() -> None:
        while not stop.wait(every_s):
            try:
                values.append(probe())
            except OSError:
                return

    threading.Thread(target=run, daemon=True).start()
    return values


def machine() -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"
