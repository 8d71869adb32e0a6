"""The secrets sweep (issue 7): a configured token appears nowhere in what the daemon and
the commands printed or wrote during the whole suite (not part of the package).

A pytest plugin, registered from tests/conftest.py. It looks for every token a test
module registered with `secret()` in

- every test report: captured stdout, stderr and log, and the failure text;
- what tests read with capsys (this module's `capsys`), and what helpers captured from
  subprocesses and gave to `output()` (tests/running.py's `command()`, the system tests'
  journal and console);
- at the end of the session, every regular file under the session's basetemp (daemon
  logs such as the `run.log` of tests/running.py's `Run`, SQLite databases and their
  -wal, exports, status JSON), except what a test registered with `exempt()`: inputs
  that hold the token by design (a config file, a token file) and machine images a
  system test built, which gateagent never wrote to.

A token is looked for in each form `gateagent.logs` redacts (plain, repr, JSON, URL
quoted), by the package's own redactor, so both agree on what "the token" is. A finding
fails the session and names the test or the file, never the token.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Private, but it is the one definition of the forms a token takes in a line; a copy
# here could drift from what the package redacts.
from gateagent.logs import _Redactor

if TYPE_CHECKING:
    from _pytest.capture import CaptureResult  # pytest does not export it


class Sweep:
    """Secrets, exempt paths, and what was scanned and found. Safe to call from threads
    (a helper's reader thread)."""

    # Files are read in chunks so that a large one costs no memory; the overlap, far
    # longer than any form of a token, lets a form cut by a chunk boundary be seen whole.
    chunk_bytes = 16 << 20
    overlap_bytes = 64 << 10

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, _Redactor] = {}
        self._any = _Redactor()  # all of them: one pass over a text that holds none
        self._exempt: set[Path] = set()
        self.findings: list[str] = []
        self.current = "(no test)"  # the test running now, for output() from helpers
        self.reports = 0
        self.outputs = 0
        self.output_bytes = 0
        self.files = 0
        self.file_bytes = 0
        self.tree_s = 0.0

    def secret(self, value: str, name: str) -> None:
        redactor = _Redactor()
        redactor.add(value)
        with self._lock:
            self._secrets[name] = redactor
            self._any.add(value)

    def exempt(self, path: Path) -> None:
        with self._lock:
            self._exempt.add(path.resolve())

    def found_in(self, text: str) -> list[str]:
        """The names of the secrets `text` holds in any form."""
        if self._any.redact(text) == text:
            return []
        with self._lock:
            secrets = list(self._secrets.items())
        return [name for name, redactor in secrets if redactor.redact(text) != text]

    def scan_text(self, text: str, where: str) -> None:
        names = self.found_in(text)
        with self._lock:
            self.outputs += 1
            self.output_bytes += len(text)
            self.findings += [f"{name} in {where}" for name in names]

    def scan_tree(self, root: Path) -> None:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(folder, d) not in self._exempt]
            for file in files:
                path = Path(folder, file)
                if path not in self._exempt:
                    self.scan_file(path)

    def scan_file(self, path: Path) -> None:
        try:
            # Only regular files: a test's symlink to a pty or a FIFO would block a read.
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return
            names: set[str] = set()
            size = 0
            with path.open("rb") as file:
                tail = b""
                while block := file.read(self.chunk_bytes):
                    size += len(block)
                    # surrogateescape: a token stored as UTF-8 decodes as itself, any
                    # other byte (a SQLite page) decodes without an error.
                    text = (tail + block).decode("utf-8", "surrogateescape")
                    names.update(self.found_in(text))
                    tail = block[-self.overlap_bytes :]
        except FileNotFoundError:  # removed by its test's own cleanup meanwhile
            return
        with self._lock:
            self.files += 1
            self.file_bytes += size
            self.findings += [f"{name} in {path}" for name in sorted(names)]

    def scan_report(self, report: pytest.TestReport) -> None:
        with self._lock:
            self.reports += 1
        # A report carries the sections of its earlier phases too: take only its own.
        for title, text in report.sections:
            if title.endswith(f" {report.when}"):
                self.scan_text(text, f"{report.nodeid} ({title})")
        if report.longrepr:
            self.scan_text(report.longreprtext, f"{report.nodeid} ({report.when} report)")

    def summary(self) -> str:
        """One line; a leak is a place (a file, an output) holding a token in some form."""
        return (
            f"secrets sweep: {len(self.findings)} leaks of {len(self._secrets)} tokens in "
            f"{self.files:,} files ({self.file_bytes / 1e6:,.0f} MB, {self.tree_s:.1f} s), "
            f"{self.reports:,} test reports and {self.outputs:,} outputs "
            f"({self.output_bytes / 1e6:,.1f} MB)"
        )


# The session's sweep: helpers register into it when their module is imported.
_sweep = Sweep()


def secret(value: str, name: str) -> str:
    """Sweep the suite for `value`, a token tests configure; `name` (where it is defined)
    is what a finding shows instead of the value. Returns `value`."""
    _sweep.secret(value, name)
    return value


def exempt(path: Path) -> Path:
    """Do not scan `path` (a file, or a folder and all under it): an input that holds a
    token by design, or a built machine image. Returns `path`, to wrap a write."""
    _sweep.exempt(path)
    return path


def output(*texts: str | bytes | None, source: str = "output") -> None:
    """Scan what a subprocess printed (its stdout, stderr), found for the test running now."""
    decoded = [t.decode(errors="surrogateescape") if isinstance(t, bytes) else t for t in texts]
    if any(decoded):
        _sweep.scan_text("\n".join(t for t in decoded if t), f"{_sweep.current} ({source})")


# -- pytest hooks -------------------------------------------------------------------------


def pytest_runtest_logstart(nodeid: str) -> None:
    _sweep.current = nodeid


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _sweep.scan_report(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.longrepr:
        _sweep.scan_text(report.longreprtext, f"{report.nodeid} (collection)")


@pytest.fixture
def capsys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> pytest.CaptureFixture[str]:
    """pytest's capsys, whose readouterr() also gives what it read to the sweep: text a
    test reads is taken out of the captured output its report would carry."""
    read = capsys.readouterr

    def readouterr() -> CaptureResult[str]:
        captured = read()
        output(captured.out, captured.err, source="read with capsys")
        return captured

    monkeypatch.setattr(capsys, "readouterr", readouterr)
    return capsys


_basetemp: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _secrets_sweep_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Remembers the session's basetemp, scanned when the session ends."""
    _basetemp[:] = [tmp_path_factory.getbasetemp()]


# Before the tmpdir plugin's own sessionfinish, which may remove folders (retention policy).
@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    started = time.monotonic()
    for root in _basetemp:
        _sweep.scan_tree(root)
    _sweep.tree_s = time.monotonic() - started
    if _sweep.findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for finding in _sweep.findings:
        terminalreporter.write_line(f"secrets sweep: {finding}", red=True, bold=True)
    terminalreporter.write_line(_sweep.summary(), red=bool(_sweep.findings))
