"""Bad input, generated (issue 7): the decoders never raise and no invalid card number
becomes a tap; the config loader loads or refuses with a one-line `ConfigError`.

The strategies and checks are in `tests/fuzzing.py`; `benchmarks/fuzz_soak.py` runs the
same with 100,000 inputs each.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given

from gateagent import config
from gateagent.cli import main
from gateagent.errors import ConfigError
from tests.fuzzing import (
    ConfigCheck,
    check_keys,
    check_serial,
    config_texts,
    key_scripts,
    serial_input,
)


@given(chunks=serial_input("rdm6300"))
def test_rdm6300_stream(chunks: list[bytes]) -> None:
    check_serial("rdm6300", chunks, Counter())


@given(chunks=serial_input("lines"))
def test_lines_stream(chunks: list[bytes]) -> None:
    check_serial("lines", chunks, Counter())


@given(script=key_scripts)
def test_hid_key_events(script: list[tuple[int, int, int, bool]]) -> None:
    check_keys(script, Counter())


@pytest.fixture(scope="module")
def config_check(tmp_path_factory: pytest.TempPathFactory) -> ConfigCheck:
    # Module-scoped: hypothesis runs every example in one call of the test.
    return ConfigCheck(tmp_path_factory.mktemp("fuzz"))


@given(text=config_texts)
def test_config_file(config_check: ConfigCheck, text: bytes) -> None:
    config_check(text, Counter())


# -- what the fuzz found -----------------------------------------------------------------

MINIMAL = """
[[readers]]
name = "desk"
kind = "stdin"

[uplink]
profile = "absensi"
url = "https://absensi.example.sch.id/api/rfid"
"""


@pytest.mark.parametrize(
    "line",
    [
        "_env_file = 0",  # TypeError
        "__pydantic_self__ = 1",  # TypeError: multiple values
        "_cli_parse_args = true",  # parsed gateagent's own command line
        '_env_prefix = "X_"',  # loaded, reading the environment under another prefix
    ],
)
def test_top_level_underscore_keys_are_unknown_sections(tmp_path: Path, line: str) -> None:
    # pydantic-settings takes these keyword arguments of Config() as its own options.
    path = tmp_path / "config.toml"
    path.write_text(line + "\n" + MINIMAL)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.key == f"[{line.split(' =', maxsplit=1)[0]}]"
    assert caught.value.reason.startswith("unknown section; ")


@pytest.mark.parametrize(
    ("toml", "shown"),
    [
        ('[device]\n"name\\n" = "x"', "[device] name\\n: unknown key; did you mean 'name'?"),
        (
            '[device]\ntimezone = "Asia/\\u001b[2JJakarta"',
            '[device] timezone: "Asia/\\x1b[2JJakarta" is not a known time zone',
        ),
    ],
    ids=["newline-in-key", "escape-in-value"],
)
def test_config_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, shown: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml + "\n" + MINIMAL)
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gateagent: {path}: {shown}")
    assert err.count("\n") == 1
