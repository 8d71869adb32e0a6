"""The secrets sweep can fail: a leaked token is found in a file and in captured output,
in each form the package redacts, and registered inputs are left out."""

from __future__ import annotations

import json
import os
import textwrap
import urllib.parse
from pathlib import Path

import pytest

from tests.secrets_sweep import Sweep

ROOT = Path(__file__).parents[1]
# Never registered with the session's sweep: only these tests' own sweeps look for it,
# so the files and outputs they leak it into on purpose do not fail the session.
LEAKED = 'sweep-"leak"/T0KEN e5N7'


@pytest.fixture
def sweep() -> Sweep:
    sweep = Sweep()
    sweep.secret(LEAKED, "LEAKED")
    return sweep


@pytest.mark.parametrize(
    "form",
    [LEAKED, repr(LEAKED), json.dumps({"token": LEAKED}), urllib.parse.quote(LEAKED, safe="")],
    ids=["plain", "repr", "json", "url"],
)
def test_a_token_in_a_file_is_found_in_each_form(sweep: Sweep, tmp_path: Path, form: str) -> None:
    (tmp_path / "clean.log").write_text("tap delivered card_no=0012822001 token=***\n")
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "taps.db-wal").write_bytes(b"\x00SQLite\xff" + form.encode() + b"\x00")
    sweep.scan_tree(tmp_path)
    assert sweep.findings == [f"LEAKED in {tmp_path / 'db' / 'taps.db-wal'}"]
    assert sweep.files == 2


def test_a_token_cut_by_a_chunk_boundary_is_found(sweep: Sweep, tmp_path: Path) -> None:
    sweep.chunk_bytes = 1000
    sweep.overlap_bytes = 100
    leak = tmp_path / "big.log"
    leak.write_bytes(b"x" * (sweep.chunk_bytes - 5) + LEAKED.encode() + b"y" * 3000)
    sweep.scan_tree(tmp_path)
    assert sweep.findings == [f"LEAKED in {leak}"]
    assert sweep.file_bytes == leak.stat().st_size


def test_exempt_inputs_and_non_regular_files_are_left_out(sweep: Sweep, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[uplink]\ntoken = "{LEAKED}"\n')
    sweep.exempt(config)
    (tmp_path / "machine" / "etc").mkdir(parents=True)
    (tmp_path / "machine" / "etc" / "token").write_text(LEAKED)
    sweep.exempt(tmp_path / "machine")
    os.mkfifo(tmp_path / "fifo")  # opening it would wait for a writer for ever
    (tmp_path / "link").symlink_to(config)
    sweep.scan_tree(tmp_path)
    assert sweep.findings == []
    assert sweep.files == 0


def test_a_token_in_output_is_found_and_named_not_shown(sweep: Sweep) -> None:
    sweep.scan_text("gateagent started\n", "tests/test_x.py::test_clean")
    sweep.scan_text(f"POST failed body={{'token': {LEAKED!r}}}", "tests/test_x.py::test_leak")
    assert sweep.findings == ["LEAKED in tests/test_x.py::test_leak"]
    assert (sweep.outputs, sweep.files) == (2, 0)
    assert LEAKED not in sweep.summary()


INNER = f"""
from pathlib import Path

from tests import secrets_sweep

TOKEN = secrets_sweep.secret({LEAKED!r}, "inner TOKEN")


def test_prints_it() -> None:
    print("sending", TOKEN)


def test_writes_it_in_a_log(tmp_path: Path) -> None:
    (tmp_path / "daemon.log").write_text("token=" + TOKEN)


def test_writes_it_in_a_config(tmp_path: Path) -> None:
    secrets_sweep.exempt(tmp_path / "config.toml").write_text(f'token = "{{TOKEN}}"')


def test_a_subprocess_printed_it() -> None:
    secrets_sweep.output(b"", ("uplink paused " + TOKEN).encode())


def test_reads_it_with_capsys(capsys) -> None:
    print("token", TOKEN)
    assert capsys.readouterr().out
"""


def test_a_leak_fails_the_session_and_says_where(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the inner pytest imports tests.secrets_sweep
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "tests.secrets_sweep")
    result.assert_outcomes(passed=5)  # every test passed, the sweep failed the session
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    found = [line for line in result.outlines if line.startswith("secrets sweep: inner TOKEN")]
    assert set(found) == {
        "secrets sweep: inner TOKEN in test_inner.py::test_a_subprocess_printed_it (output)",
        "secrets sweep: inner TOKEN in test_inner.py::test_prints_it (Captured stdout call)",
        "secrets sweep: inner TOKEN in test_inner.py::test_reads_it_with_capsys (read with capsys)",
        f"secrets sweep: inner TOKEN in {pytester.path}/runpytest-0/"
        "test_writes_it_in_a_log0/daemon.log",
    }
    assert len(found) == 4
    result.stdout.fnmatch_lines(
        ["secrets sweep: 4 leaks of 1 tokens in 1 files (0 MB, *), 15 test reports and *"]
    )
    assert LEAKED not in result.stdout.str() + result.stderr.str()


def test_a_clean_session_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        test_inner=textwrap.dedent(f"""
            from tests import secrets_sweep

            TOKEN = secrets_sweep.secret({LEAKED!r}, "inner TOKEN")

            def test_prints_something_else(tmp_path) -> None:
                print("token=***")
                (tmp_path / "daemon.log").write_text("gateagent started")
        """)
    )
    result = pytester.runpytest_subprocess("-p", "tests.secrets_sweep")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["secrets sweep: 0 leaks of 1 tokens in 1 files (0 MB, *"])
