"""Log lines for journald and for terminals, with the token redacted and repeats summarised.

SPEC "Operations": logs go to stderr, one line per event, with a `<N>` syslog priority
prefix when running under systemd and plain text in a terminal, so that
`journalctl -u gateagent -p warning` shows what needs attention.

- Under systemd, journald reads stderr line by line and takes a leading `<N>` as the
  line's priority (sd-daemon(3)). It timestamps every line itself, so ours carry none.
  journald splits on newlines, so a traceback or a multi-line message gets the prefix
  on every line; otherwise its continuation lines would fall back to the unit's
  default priority and vanish from `journalctl -p warning`.
- In a terminal a line is `2026-12-01 07:15:02 +07:00 message`: the time in the gate's
  zone (`[device] timezone`, core/localtime.py) with its offset, not the machine's zone
  without one (issue 13), and the level word only for warnings and worse: info lines
  are the normal traffic and read better without it.
- Every formatted line (message, arguments, exception text, traceback) goes through the
  redactor, so a registered secret (the uplink token) never reaches a log line even when
  some code passes it by mistake (SPEC "Delivery guarantees").
- `Repeats` logs a repeating problem once, then a summary per window, then its
  recovery (SPEC: "A repeating error is logged once, then summarised, never once per
  retry").

The message style is a message, then key=value pairs:
`tap recorded card_no=0012822001 reader=entrance checktype=1`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import types
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TextIO

from gateagent.core.localtime import local_time

# Shorter secrets would redact ordinary words and numbers all over the log, and a real
# token is far longer anyway.
MIN_SECRET_LEN = 4
REDACTED = "***"

# sd-daemon(3): SD_CRIT "<2>", SD_ERR "<3>", SD_WARNING "<4>", SD_INFO "<6>", SD_DEBUG "<7>".
# Python has no NOTICE, ALERT or EMERG; a custom level in between takes the priority of
# the next standard level at or below it.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7

# httpx logs every request at INFO; with one POST per tap that would double the log of
# a busy gate (our own "tap delivered" line says what matters). Their warnings still show.
_CHATTY_LIBRARIES = ("httpx", "httpcore")


def priority(levelno: int) -> int:
    """The syslog priority (sd-daemon(3) prefix digit) of a logging level."""
    for threshold, value in _PRIORITIES:
        if levelno >= threshold:
            return value
    return _DEBUG_PRIORITY


# The journal prefix of each standard level, made once rather than once a line.
_PREFIXES = {
    level: f"<{priority(level)}>"
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
}


class _Redactor:
    """Replaces every registered secret, in the forms it can take in a line, by `***`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        forms: set[str] = set()
        for candidate in {value, value.strip()}:
            # A token quoted in a repr (an exception's args), in JSON (a request body
            # echoed in an error) or in a URL (a webhook query) is escaped differently.
            forms |= {
                candidate,
                repr(candidate)[1:-1],
                json.dumps(candidate)[1:-1],
                urllib.parse.quote(candidate, safe=""),
            }
        forms = {form for form in forms if len(form) >= MIN_SECRET_LEN}
        if not forms:
            return
        with self._lock:
            self._forms |= forms
            # Longest first, so a secret containing another is replaced whole.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(form) for form in ordered))

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)


# One registry for the process: a secret registered before or after `setup()` (the token
# is known only once the configuration is loaded) protects every line from then on.
# Secrets are never forgotten, so the old token stays redacted after a reload.
_redactor = _Redactor()


def add_secret(value: str) -> None:
    """Never let `value` appear in a log line; values shorter than 4 characters are ignored."""
    _redactor.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***` (for other outputs, e.g. errors)."""
    return _redactor.redact(text)


class _Formatter(logging.Formatter):
    def __init__(self, journal: bool, tz: tzinfo | None = None) -> None:
        super().__init__("%(message)s")
        self._journal = journal
        self._tz = tz
        # The terminal's time stamp of the last line: lines come many to a second (a
        # burst of taps), and formatting a local time costs more than the rest of a line.
        self._stamp_second: int | None = None
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            # Format and redact the traceback here: logging caches it on the record, and
            # other handlers (pytest's, a future one) then reuse the redacted text.
            if record.exc_info and not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = _redactor.redact(record.exc_text)
            text = _redactor.redact(super().format(record))
        else:
            # What super().format() makes of "%(message)s" without a traceback, without
            # its steps: this is every tap's "tap recorded" line.
            record.message = record.getMessage()
            text = _redactor.redact(record.message)
        if self._journal:
            prefix = _PREFIXES.get(record.levelno) or f"<{priority(record.levelno)}>"
            lines = text.splitlines()
            if len(lines) == 1:
                return prefix + lines[0]
            return "\n".join(prefix + line for line in lines or [""])
        second = int(record.created)
        if second != self._stamp_second:
            at = datetime.fromtimestamp(second, UTC)
            # Without a configuration (demo, listen --path): this machine's zone, offset shown.
            self._stamp = local_time(at, self._tz or at.astimezone().tzinfo or UTC)
            self._stamp_second = second
        if record.levelno >= logging.WARNING:
            return f"{self._stamp} {record.levelname} {text}"
        return f"{self._stamp} {text}"


class _Handler(logging.StreamHandler[TextIO]):
    """The stderr handler; `setup()` recognises its own by this class."""

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler.emit, with the stream flushed directly: handle() holds the
        # handler's lock already, and flush() would take it again for every line.
        try:
            stream = self.stream
            stream.write(self.format(record) + self.terminator)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # The stock handleError prints the record's message and arguments to sys.stderr,
        # unredacted and unprefixed. Say what failed in one line of our own instead.
        error = sys.exc_info()[1]
        note = logging.makeLogRecord(
            {
                "name": record.name,
                "levelno": logging.ERROR,
                "levelname": "ERROR",
                # The call's format string says where it is (records carry no file and
                # line: see setup()).
                "msg": "log record could not be formatted logger=%s format=%r error=%r",
                "args": (record.name, str(record.msg)[:80], error),
            }
        )
        try:
            self.stream.write(self.format(note) + self.terminator)
            self.flush()
        except (OSError, ValueError):
            # stderr itself is gone (closed, EPIPE): there is nowhere left to report to.
            return


def _under_journald(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True if `stream` is the journal stream systemd connected us to.

    systemd.exec(5): JOURNAL_STREAM is "device:inode" of that stream; a program should
    compare it with its stderr, because a child whose stderr was redirected inherits the
    variable too. A stream without a file descriptor (a test's StringIO) trusts it.
    """
    value = environ.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True
    return value == f"{status.st_dev}:{status.st_ino}"


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: types.TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("gateagent").critical("uncaught exception", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):  # as threading's own hook: a quiet exit
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("gateagent").critical(
        "uncaught exception in thread thread=%s",
        name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def setup(
    level: int = logging.INFO,
    stream: TextIO | None = None,
    secrets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    tz: tzinfo | None = None,
) -> None:
    """Send log records to `stream` (default: the current sys.stderr), one line each;
    in a terminal with the time in `tz` (the gate's `[device] timezone`).

    Idempotent: a second call replaces the handler of the first (new level, stream or
    environment), so nothing is logged twice. Handlers others added to the root logger
    (pytest's capture) are left alone. Uncaught exceptions and Python warnings are routed
    through the same handler, so a crash traceback too is prefixed and redacted.
    """
    for secret in secrets:
        add_secret(secret)
    target = sys.stderr if stream is None else stream
    handler = _Handler(target)
    handler.setFormatter(
        _Formatter(_under_journald(target, os.environ if environ is None else environ), tz)
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # No line shows the caller's file and line, thread or process: logging's HOWTO
    # ("Optimization") says to turn their collection off then. Finding the caller's
    # frame was 16k of a log call's 59k instructions, and every tap logs a line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


@dataclass
class _Problem:
    level: int
    message: str  # the latest report's message, used in the summary
    first_at: float  # the first report, for resolve()
    window_at: float  # start of the current window
    total: int  # reports since the first
    unlogged: int  # reports in the current window not logged yet


def _span(seconds: float) -> str:
    """A duration as a person reads it in a log line: `45 s`, `10 min`, `3 h`."""
    if seconds < 120:
        return f"{round(seconds)} s"
    if seconds < 120 * 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def _times(count: int, word: str = "time") -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class Repeats:
    """Logs a repeating problem once, then at most one summary per window.

    `key` names the problem (`"uplink"`, `"reader:entrance"`); time is the caller's
    monotonic clock, so tests need no sleeps. A key stays known until `resolve()`: a
    problem that stopped being reported without being resolved still gets its recovery
    line when it is resolved later. Keys are a small fixed set (kinds of failure), so
    this does not grow. Safe to call from several threads.
    """

    def __init__(self, logger: logging.Logger, window_s: float = 600.0) -> None:
        self._logger = logger
        self._window_s = window_s
        self._lock = threading.Lock()
        self._problems: dict[str, _Problem] = {}

    def report(self, key: str, level: int, message: str, now: float) -> None:
        """One occurrence of `key`: logged if it is the first (in a window), else counted."""
        with self._lock:
            problem = self._problems.get(key)
            if problem is None:
                self._problems[key] = _Problem(level, message, now, now, 1, 0)
                self._logger.log(level, message)
                return
            problem.total += 1
            problem.level = level
            problem.message = message
            if problem.unlogged == 0 and self._expired(problem, now):
                # A quiet window ended: this report opens a new one, and is shown as is.
                problem.window_at = now
                self._logger.log(level, message)
                return
            problem.unlogged += 1
            self._summarise(problem, now)

    def tick(self, now: float) -> None:
        """Log the summaries whose window has passed (the daemon's housekeeping calls it)."""
        with self._lock:
            for problem in self._problems.values():
                self._summarise(problem, now)

    def resolve(self, key: str, message: str, now: float, level: int = logging.INFO) -> None:
        """`key` is over: log `message` with how often it happened, and forget it."""
        with self._lock:
            problem = self._problems.pop(key, None)
            if problem is None:
                return
            reports = _times(problem.total, "report")
            self._logger.log(
                level, f"{message} (after {reports} in {_span(now - problem.first_at)})"
            )

    def active(self) -> list[str]:
        """The keys reported and not resolved yet."""
        with self._lock:
            return sorted(self._problems)

    def _expired(self, problem: _Problem, now: float) -> bool:
        return now - problem.window_at >= self._window_s

    def _summarise(self, problem: _Problem, now: float) -> None:
        if problem.unlogged == 0 or not self._expired(problem, now):
            return
        count = problem.unlogged
        more = f"{count} more time" if count == 1 else f"{count} more times"
        span = _span(now - problem.window_at)
        self._logger.log(problem.level, f"{problem.message} (… {more} in the last {span})")
        problem.window_at = now
        problem.unlogged = 0
