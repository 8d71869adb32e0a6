"""Log lines: <N> prefixes for journald (sd-daemon(3)), plain terminal lines, the token
redacted everywhere, and repeating problems summarised (SPEC "Operations")."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateagent import logs

TOKEN = "tok_9f8e7d6c5b4a39281706"
JOURNAL = {"JOURNAL_STREAM": "8:123456"}
TERMINAL: dict[str, str] = {}

# The time in the machine's zone (no [device] timezone given) with its offset.
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d"


log = logging.getLogger("gateagent.test")


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without our handler or secrets and leaves logging as it found it."""
    root = logging.getLogger()
    level = root.level
    chatty = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    monkeypatch.setattr(logs, "_redactor", logs._Redactor())
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    yield
    for handler in [h for h in root.handlers if isinstance(h, logs._Handler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, old in chatty.items():
        logging.getLogger(name).setLevel(old)
    logging.captureWarnings(False)


def journal(secrets: tuple[str, ...] = ()) -> io.StringIO:
    out = io.StringIO()
    logs.setup(level=logging.DEBUG, stream=out, secrets=secrets, environ=JOURNAL)
    return out


def terminal(secrets: tuple[str, ...] = ()) -> io.StringIO:
    out = io.StringIO()
    logs.setup(level=logging.DEBUG, stream=out, secrets=secrets, environ=TERMINAL)
    return out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


# --- journald ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.CRITICAL, "<2>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
        (logging.INFO + 5, "<6>"),
        (logging.CRITICAL + 10, "<2>"),
    ],
    ids=["critical", "error", "warning", "info", "debug", "between", "above"],
)
def test_journal_lines_carry_the_syslog_priority(level: int, prefix: str) -> None:
    out = journal()
    log.log(level, "tap recorded card_no=0012822001 reader=entrance checktype=1")
    assert lines(out) == [prefix + "tap recorded card_no=0012822001 reader=entrance checktype=1"]


def test_every_journal_line_has_a_prefix_even_in_tracebacks() -> None:
    out = journal()
    log.warning("first line\nsecond line\n\nafter a blank")
    try:
        raise RuntimeError("store broke\nsecond line of the error")
    except RuntimeError:
        log.exception("commit failed path=%s", "/var/lib/gateagent/taps.db")
    log.info("", exc_info=False)
    output = lines(out)
    assert output[:4] == ["<4>first line", "<4>second line", "<4>", "<4>after a blank"]
    assert "<3>Traceback (most recent call last):" in output
    assert "<3>RuntimeError: store broke" in output
    assert "<3>second line of the error" in output
    assert output[-1] == "<6>"
    assert all(re.match(r"^<[0-7]>", line) for line in output), output


def test_a_level_below_debug_is_debug() -> None:
    assert logs.priority(1) == 7


def test_journal_lines_have_no_timestamp() -> None:
    out = journal()
    log.info("uplink ok")
    assert lines(out) == ["<6>uplink ok"]


def test_journal_stream_of_another_file_means_a_terminal(tmp_path: Path) -> None:
    # systemd.exec(5): JOURNAL_STREAM is device:inode of the journal stream; a process
    # whose stderr is something else only inherited the variable.
    with (tmp_path / "err.log").open("w") as stream:
        info = (tmp_path / "err.log").stat()
        logs.setup(stream=stream, environ={"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        log.info("to the journal")
        logs.setup(stream=stream, environ={"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        log.info("to a terminal")
    written = (tmp_path / "err.log").read_text().splitlines()
    assert written[0] == "<6>to the journal"
    assert re.fullmatch(STAMP + r" to a terminal", written[1])


def test_uncaught_exceptions_and_warnings_are_prefixed_too() -> None:
    out = journal()
    try:
        raise ValueError("boom")
    except ValueError as error:
        sys.excepthook(ValueError, error, error.__traceback__)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    output = lines(out)
    assert output[0] == "<2>uncaught exception"
    assert "<2>ValueError: boom" in output
    assert any(line.startswith("<4>") and "deprecated thing" in line for line in output)
    assert all(re.match(r"^<[0-7]>", line) for line in output), output


def test_uncaught_exception_in_a_thread_is_logged() -> None:
    out = journal()

    def crash() -> None:
        raise RuntimeError("reader loop died")

    thread = threading.Thread(target=crash, name="reader-entrance")
    thread.start()
    thread.join(timeout=10)
    output = lines(out)
    assert output[0] == "<2>uncaught exception in thread thread=reader-entrance"
    assert "<2>RuntimeError: reader loop died" in output


# --- terminal ------------------------------------------------------------------------------


def test_terminal_lines_are_plain_with_time_and_level_for_warnings() -> None:
    out = terminal()
    log.info("tap recorded card_no=0012822001 reader=entrance checktype=1")
    log.warning("reader disconnected reader=exit")
    log.error("uplink paused reason=paused-auth")
    info, warning, error = lines(out)
    assert re.fullmatch(
        STAMP + r" tap recorded card_no=0012822001 reader=entrance checktype=1", info
    )
    assert re.fullmatch(STAMP + r" WARNING reader disconnected reader=exit", warning)
    assert re.fullmatch(STAMP + r" ERROR uplink paused reason=paused-auth", error)
    assert not any(line.startswith("<") for line in lines(out))


def test_setup_is_idempotent_and_takes_the_new_settings() -> None:
    first = journal()
    second = terminal()
    log.info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    assert sum(isinstance(h, logs._Handler) for h in logging.getLogger().handlers) == 1


def test_level_filters() -> None:
    out = io.StringIO()
    logs.setup(level=logging.WARNING, stream=out, environ=JOURNAL)
    log.info("not shown")
    log.warning("shown")
    assert lines(out) == ["<4>shown"]


def test_chatty_libraries_log_warnings_only() -> None:
    out = journal()
    logging.getLogger("httpx").info("HTTP Request: POST https://example.test 200 OK")
    logging.getLogger("httpx").warning("something odd")
    assert lines(out) == ["<4>something odd"]


# --- secrets -------------------------------------------------------------------------------


def test_token_in_message_or_args_is_redacted() -> None:
    out = journal(secrets=(TOKEN,))
    log.info("sending token=" + TOKEN)
    log.info("sending body=%s", {"token": TOKEN, "gate": 4})
    log.info("url=%s", f"https://example.test/?token={TOKEN}&x=1")
    assert TOKEN not in out.getvalue()
    assert lines(out) == [
        "<6>sending token=***",
        "<6>sending body={'token': '***', 'gate': 4}",
        "<6>url=https://example.test/?token=***&x=1",
    ]


def test_token_in_exception_text_and_traceback_is_redacted() -> None:
    out = terminal()
    logs.add_secret(TOKEN)
    try:
        raise PermissionError(f"server refused token {TOKEN}")
    except PermissionError:
        log.exception("uplink failed")
    try:
        token = TOKEN
        raise ValueError(token)
    except ValueError as error:
        log.error("bad answer error=%r", error, exc_info=True)
    assert TOKEN not in out.getvalue()
    assert "PermissionError: server refused token ***" in out.getvalue()
    assert "bad answer error=ValueError('***')" in out.getvalue()


def test_escaped_forms_of_the_token_are_redacted() -> None:
    token = 'ab"c\\d/e f'
    out = journal(secrets=(token,))
    log.info("repr=%r json=%s", token, '{"token": "ab\\"c\\\\d/e f"}')
    log.info("quoted=%s", "ab%22c%5Cd%2Fe%20f")
    assert lines(out) == ['<6>repr=\'***\' json={"token": "***"}', "<6>quoted=***"]


def test_secret_registered_after_setup_is_redacted() -> None:
    out = journal()
    logs.add_secret(TOKEN + "\n")  # as read from a token file
    log.info("token=%s", TOKEN)
    assert lines(out) == ["<6>token=***"]


def test_short_secrets_are_not_registered() -> None:
    out = journal(secrets=("abc", ""))
    log.info("abc is a word")
    assert lines(out) == ["<6>abc is a word"]


def test_a_record_that_fails_to_format_does_not_leak_its_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = journal(secrets=(TOKEN,))
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
    unregistered = "another-secret-value"
    # Handed to our handler alone: pytest's capture handler would raise on these.
    for msg, args in [("two placeholders %s %s", (unregistered,)), ("token=%s", (TOKEN, "x"))]:
        handler.handle(logging.makeLogRecord({"msg": msg, "args": args, "levelno": 20}))
    assert unregistered not in out.getvalue()
    assert TOKEN not in out.getvalue()
    assert len(lines(out)) == 2
    assert all(line.startswith("<3>log record could not be formatted") for line in lines(out))
    captured = capsys.readouterr()
    assert TOKEN not in captured.err
    assert unregistered not in captured.err


def test_redact_is_available_for_other_outputs() -> None:
    logs.add_secret(TOKEN)
    assert logs.redact(f"POST failed token={TOKEN}") == "POST failed token=***"


# --- Repeats -------------------------------------------------------------------------------


@pytest.fixture
def repeats_out() -> io.StringIO:
    return journal()


def test_first_report_is_logged_at_once(repeats_out: io.StringIO) -> None:
    repeats = logs.Repeats(log)
    repeats.report("uplink", logging.ERROR, "uplink unreachable error=timeout", now=100.0)
    assert lines(repeats_out) == ["<3>uplink unreachable error=timeout"]


def test_repeats_are_counted_and_summarised_once_per_window(repeats_out: io.StringIO) -> None:
    repeats = logs.Repeats(log, window_s=600.0)
    repeats.report("uplink", logging.ERROR, "uplink unreachable error=timeout", now=0.0)
    for second in range(10, 580, 10):  # 57 more within the window
        repeats.report("uplink", logging.ERROR, "uplink unreachable error=timeout", now=second)
    assert len(lines(repeats_out)) == 1
    repeats.tick(599.0)
    assert len(lines(repeats_out)) == 1
    repeats.tick(600.0)
    repeats.tick(601.0)
    repeats.tick(1300.0)
    assert lines(repeats_out) == [
        "<3>uplink unreachable error=timeout",
        "<3>uplink unreachable error=timeout (… 57 more times in the last 10 min)",
    ]


def test_a_report_after_the_window_flushes_the_summary_with_itself(
    repeats_out: io.StringIO,
) -> None:
    repeats = logs.Repeats(log, window_s=600.0)
    repeats.report("uplink", logging.ERROR, "uplink unreachable error=timeout", now=0.0)
    repeats.report("uplink", logging.ERROR, "uplink unreachable error=timeout", now=300.0)
    repeats.report("uplink", logging.WARNING, "uplink unreachable error=refused", now=900.0)
    assert lines(repeats_out)[1:] == [
        "<4>uplink unreachable error=refused (… 2 more times in the last 15 min)"
    ]
    # A new window began at 900: the next report is only counted.
    repeats.report("uplink", logging.ERROR, "uplink unreachable error=timeout", now=1000.0)
    assert len(lines(repeats_out)) == 2
    repeats.tick(1500.0)
    assert lines(repeats_out)[2] == (
        "<3>uplink unreachable error=timeout (… 1 more time in the last 10 min)"
    )


def test_after_a_quiet_window_a_report_is_logged_as_is(repeats_out: io.StringIO) -> None:
    repeats = logs.Repeats(log, window_s=600.0)
    repeats.report("reader:exit", logging.WARNING, "reader disconnected reader=exit", now=0.0)
    repeats.tick(700.0)
    repeats.report("reader:exit", logging.WARNING, "reader disconnected reader=exit", now=800.0)
    assert lines(repeats_out) == ["<4>reader disconnected reader=exit"] * 2


def test_keys_are_independent(repeats_out: io.StringIO) -> None:
    repeats = logs.Repeats(log, window_s=60.0)
    repeats.report("a", logging.ERROR, "problem a", now=0.0)
    repeats.report("b", logging.WARNING, "problem b", now=1.0)
    repeats.report("a", logging.ERROR, "problem a", now=2.0)
    repeats.tick(61.0)
    assert lines(repeats_out) == [
        "<3>problem a",
        "<4>problem b",
        "<3>problem a (… 1 more time in the last 61 s)",
    ]
    assert repeats.active() == ["a", "b"]


def test_resolve_logs_recovery_with_the_count_and_forgets(repeats_out: io.StringIO) -> None:
    repeats = logs.Repeats(log, window_s=600.0)
    for second in range(0, 720, 60):
        repeats.report("uplink", logging.ERROR, "uplink unreachable", now=float(second))
    repeats.resolve("uplink", "uplink ok again", now=720.0)
    assert lines(repeats_out)[-1] == "<6>uplink ok again (after 12 reports in 12 min)"
    assert repeats.active() == []
    repeats.report("uplink", logging.ERROR, "uplink unreachable", now=730.0)
    assert lines(repeats_out)[-1] == "<3>uplink unreachable"


def test_resolve_of_an_unknown_key_is_a_no_op(repeats_out: io.StringIO) -> None:
    repeats = logs.Repeats(log)
    repeats.resolve("uplink", "uplink ok again", now=5.0)
    repeats.resolve("uplink", "uplink ok again", now=5.0, level=logging.WARNING)
    assert lines(repeats_out) == []


def test_resolve_at_a_chosen_level(repeats_out: io.StringIO) -> None:
    repeats = logs.Repeats(log)
    repeats.report("clock", logging.WARNING, "clock not synchronized", now=0.0)
    repeats.resolve("clock", "clock synchronized", now=30.0, level=logging.WARNING)
    assert lines(repeats_out)[-1] == "<4>clock synchronized (after 1 report in 30 s)"


def test_terminal_lines_show_the_gates_time_zone(tmp_path: Path) -> None:
    """Issue 13: on a UTC machine a gate in Jakarta reads Jakarta's time, offset shown."""
    with (tmp_path / "err.log").open("w") as stream:
        logs.setup(stream=stream, environ={}, tz=ZoneInfo("Asia/Jakarta"))
        before = datetime.now(UTC)
        log.info("tap recorded card_no=0012822001")
        after = datetime.now(UTC)
    (written,) = (tmp_path / "err.log").read_text().splitlines()
    stamp, message = written[:26], written[27:]
    assert message == "tap recorded card_no=0012822001"
    assert stamp.endswith(" +07:00")
    shown = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z")
    assert before.replace(microsecond=0) <= shown <= after
