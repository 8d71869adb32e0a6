from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from gateagent import config, configfile
from gateagent.cli import main
from gateagent.errors import ConfigError
from tests import secrets_sweep
from tests.fuzzing import config_documents
from tests.running import command
from tests.settings import CREDENTIAL

TOKEN = secrets_sweep.secret("s3cret-T0KEN-e5N7Zq4Szsw3TbFp5o8rNh", "tests/test_config.py TOKEN")

GOOD = f"""
[device]
name = "gate-4-main"
timezone = "Asia/Jakarta"

[storage]
path = "/var/lib/gateagent/taps.db"

[taps]
debounce = "3s"
card_format = "dec10"

[[readers]]
name = "entrance"
kind = "serial"
path = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
protocol = "rdm6300"

[[readers]]
name = "exit"
kind = "hid"
path = "/dev/input/by-id/usb-Sycreader-event-kbd"
direction = "out"

[uplink]
url = "https://api.example.sch.id/api/v1/attendances/integration"
token = "{TOKEN}"
gate = 4
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = secrets_sweep.exempt(tmp_path / name)  # most hold the token
    path.write_text(textwrap.dedent(text))
    return path


def replaced(old: str, new: str, text: str = GOOD) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_good_file_has_spec_defaults(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, GOOD))
    assert loaded.device.name == "gate-4-main"
    assert loaded.taps.debounce == 3.0
    assert loaded.taps.min_checkout_after == 600.0
    assert loaded.taps.card_format == "dec10"
    assert loaded.taps.reverse_bytes is False
    assert loaded.storage.keep_sent == 30 * 86400
    assert loaded.storage.keep_rejected == 90 * 86400
    assert [r.name for r in loaded.readers] == ["entrance", "exit"]
    assert loaded.readers[0].baudrate == 9600
    assert loaded.readers[0].direction == "auto"
    assert loaded.readers[1].direction == "out"
    assert loaded.uplink.profile == "integration"
    assert loaded.uplink.flush_interval == 30.0
    assert loaded.uplink.concurrency == 4
    assert loaded.uplink.timeout == 10.0
    assert loaded.device.require_clock_sync is True
    assert loaded.uplink.token is not None
    assert loaded.uplink.token.get_secret_value() == TOKEN


def test_example_config_in_repo_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_sweep.exempt(tmp_path / "uplink-token").write_text(CREDENTIAL + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    example = Path(__file__).parents[1] / "config.example.toml"
    loaded = config.load(example)
    assert loaded.uplink.profile == "integration"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("30d", 2592000),
        ("1.5s", 1.5),
        ("0s", 0),
        ("45", 45),
        (12, 12),
        (0.25, 0.25),
    ],
    ids=str,
)
def test_durations(text: object, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["30x", "", "s", "-5s", "ten minutes", "1e999", True, None, "1 0s"]
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        config.parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_duration_units_scale(number: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert config.parse_duration(f"{number}{unit}") == pytest.approx(number * scale)


BAD = [
    pytest.param(replaced("[taps]", "[taps"), "", "not valid TOML", id="syntax-error"),
    pytest.param(
        replaced('debounce = "3s"', 'debounse = "3s"'),
        "[taps] debounse",
        "unknown key; did you mean 'debounce'?",
        id="unknown-key",
    ),
    pytest.param(
        replaced("[device]", "[devise]"),
        "[devise]",
        "unknown section; did you mean 'device'?",
        id="unknown-section",
    ),
    pytest.param(
        replaced("gate = 4", 'gate = 4\nflush_interval = "30x"'),
        "[uplink] flush_interval",
        '"30x" is not a duration',
        id="bad-duration",
    ),
    pytest.param(
        replaced('url = "https://api.example.sch.id/api/v1/attendances/integration"\n', ""),
        "[uplink] url",
        "is required",
        id="missing-url",
    ),
    pytest.param(
        replaced("gate = 4", "gate = 4\nconcurrency = -1"),
        "[uplink] concurrency",
        "greater than or equal to 1",
        id="negative-concurrency",
    ),
    pytest.param(
        GOOD[: GOOD.index("[[readers]]")] + GOOD[GOOD.index("[uplink]") :],
        "[readers]",
        "the section is required",
        id="no-readers",
    ),
    pytest.param(
        replaced("[uplink]", '[uplink]\nprofile = "soap"'),
        "[uplink] profile",
        "'integration', 'absensi' or 'webhook'",
        id="unknown-profile",
    ),
    pytest.param(
        replaced('kind = "hid"', 'kind = "usb"'),
        "[[readers]] #2 (exit) kind",
        "'hid', 'serial' or 'stdin'",
        id="reader-kind",
    ),
    pytest.param(
        replaced('protocol = "rdm6300"', 'protocol = "rdm630"'),
        "[[readers]] #1 (entrance) protocol",
        "'rdm6300' or 'lines'",
        id="reader-protocol",
    ),
    pytest.param(
        replaced('path = "/dev/input/by-id/usb-Sycreader-event-kbd"\n', ""),
        "[[readers]] #2 (exit) path",
        "is required for a hid reader",
        id="reader-without-path",
    ),
    pytest.param(
        replaced('name = "exit"', 'name = "entrance"'),
        "[[readers]] #2 (entrance) name",
        '"entrance" is already the name of reader #1',
        id="duplicate-reader-name",
    ),
    pytest.param(
        replaced('timezone = "Asia/Jakarta"', 'timezone = "Asia/Djakarta"'),
        "[device] timezone",
        '"Asia/Djakarta" is not a known time zone',
        id="bad-timezone",
    ),
    pytest.param(
        replaced('card_format = "dec10"', 'card_format = "decimal"'),
        "[taps] card_format",
        "'as-read', 'dec10', 'wiegand26', 'hex' or 'strip-zeros'",
        id="bad-card-format",
    ),
    pytest.param(
        replaced('url = "https://', 'url = "ftp://'),
        "[uplink] url",
        "is not an http:// or https:// URL",
        id="bad-url",
    ),
    pytest.param(
        replaced("gate = 4\n", ""),
        "[uplink] gate",
        "is required by the integration profile",
        id="integration-without-gate",
    ),
    pytest.param(
        replaced(f'token = "{TOKEN}"\n', ""),
        "[uplink] token",
        "is required by the integration profile",
        id="integration-without-token",
    ),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD)
def test_bad_config_names_file_key_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.key == key
    assert reason in caught.value.reason

    assert main(["check", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"gateagent: {path}: {key}: " if key else f"gateagent: {path}: ")
    assert reason in lines[0]
    assert TOKEN not in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.toml"
    assert main(["check", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"gateagent: {path}: cannot read the file: No such file or directory\n"
    )


def test_unreadable_token_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "token"
    path = write(tmp_path, replaced(f'token = "{TOKEN}"', f'token_file = "{missing}"'))
    assert main(["check", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"gateagent: {path}: [uplink] token_file: "
        f"cannot read {missing}: No such file or directory\n"
    )


def test_token_file_that_is_a_directory(tmp_path: Path) -> None:
    path = write(tmp_path, replaced(f'token = "{TOKEN}"', f'token_file = "{tmp_path}"'))
    with pytest.raises(ConfigError, match=r"\[uplink\] token_file: cannot read .*: Is a directory"):
        config.load(path)


def test_token_file_and_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets_sweep.exempt(tmp_path / "token")
    secret.write_text(TOKEN + "\n")
    path = write(tmp_path, replaced(f'token = "{TOKEN}"', f'token_file = "{secret}"'))
    token = config.load(path).uplink.token
    assert token is not None
    assert token.get_secret_value() == TOKEN

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "uplink-token").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    path = write(tmp_path, replaced(f'token = "{TOKEN}"\n', ""))
    token = config.load(path).uplink.token
    assert token is not None
    assert token.get_secret_value() == "from-systemd"


def test_empty_token_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("\n")
    path = write(tmp_path, replaced(f'token = "{TOKEN}"', f'token_file = "{secret}"'))
    with pytest.raises(ConfigError, match=r"\[uplink\] token_file: .* is empty"):
        config.load(path)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEAGENT_UPLINK__CONCURRENCY", "8")
    monkeypatch.setenv("GATEAGENT_UPLINK__TOKEN", "from-env")
    monkeypatch.setenv("GATEAGENT_TAPS__DEBOUNCE", "500ms")
    monkeypatch.setenv("GATEAGENT_DEVICE__REQUIRE_CLOCK_SYNC", "false")
    loaded = config.load(write(tmp_path, GOOD))
    assert loaded.uplink.concurrency == 8
    assert loaded.uplink.token is not None
    assert loaded.uplink.token.get_secret_value() == "from-env"
    assert loaded.uplink.gate == 4
    assert loaded.taps.debounce == 0.5
    assert loaded.device.require_clock_sync is False


def test_bad_environment_override_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEAGENT_UPLINK__FLUSH_INTERVAL", "soon")
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, GOOD))
    assert caught.value.key == "[uplink] flush_interval"
    assert "GATEAGENT_UPLINK__FLUSH_INTERVAL" in caught.value.reason


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("GATEAGENT_UPLINK__URL", True),
        ("gateagent_uplink__url", True),
        ("GATEAGENT_READERS", True),
        ("GATEAGENT_Taps__Debounce", True),
        ("GATEAGENT_CONFIG", False),  # the configuration's path, no setting
        ("GATEAGENT_UPLINKS__URL", False),
        ("GATEAGENT_UPLINK_URL", False),
        ("UPLINK__URL", False),
    ],
)
def test_which_variables_take_pydantic_settings(name: str, overrides: bool) -> None:
    assert config.overridden({name: "x"}) is overrides


def test_pydantic_settings_is_imported_only_for_an_override(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    script = (
        "import sys; from gateagent import config; loaded = config.load(sys.argv[1]);"
        " print(loaded.uplink.concurrency, 'pydantic_settings' in sys.modules)"
    )

    def loaded_with(**variables: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEAGENT_")}
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**env, **variables},
        )
        return done.stdout.strip()

    assert loaded_with() == "4 False"
    assert loaded_with(GATEAGENT_CONFIG=str(path)) == "4 False"
    assert loaded_with(GATEAGENT_UPLINK__CONCURRENCY="8") == "8 True"


def _validation(model: type[BaseModel], data: dict[str, Any]) -> tuple[str, object]:
    try:
        return "valid", model(**data).model_dump()
    except ValidationError as exc:
        return "invalid", [(e["loc"], e["type"], e["msg"]) for e in exc.errors()]


@pytest.fixture(scope="module")
def overridden() -> dict[type[config.ReadingConfig], type[config.ReadingConfig]]:
    # Built once, before hypothesis times the examples.
    return config.from_environment()


@given(doc=config_documents())
def test_without_a_variable_pydantic_settings_takes_a_file_as_the_models_do(
    overridden: dict[type[config.ReadingConfig], type[config.ReadingConfig]],
    doc: dict[str, Any],
) -> None:
    # config.load validates with the plain models unless a variable overrides the file.
    assume(set(doc) <= set(config.Config.model_fields))  # the others are refused before
    reading = {k: v for k, v in doc.items() if k in config.ReadingConfig.model_fields}
    for model, data in ((config.Config, doc), (config.ReadingConfig, reading)):
        assert _validation(model, data) == _validation(overridden[model], data)


def test_config_path_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configfile.config_path(None, {}) == "/etc/gateagent/config.toml"
    assert configfile.config_path(None, {"GATEAGENT_CONFIG": "/tmp/a.toml"}) == "/tmp/a.toml"
    assert configfile.config_path("/x.toml", {"GATEAGENT_CONFIG": "/tmp/a.toml"}) == "/x.toml"


def test_gateagent_config_variable_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("GATEAGENT_CONFIG", str(path))
    main(["check"])  # its readers are not plugged in here: the status is 1
    assert capsys.readouterr().out.startswith(f"OK    config {path}: profile integration")


def test_token_never_in_repr_or_errors(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, GOOD))
    assert TOKEN not in repr(loaded)
    assert TOKEN not in str(loaded)
    assert TOKEN not in loaded.model_dump_json()
    bad = replaced(f'token = "{TOKEN}"', "token = 12345")
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, bad))
    assert "12345" not in str(caught.value)


WEBHOOK = """
[[readers]]
name = "desk"
kind = "stdin"

[uplink]
profile = "webhook"
url = "https://hr.example.com/attendance/check-in"
auth = "bearer"
token = "abc"

[uplink.webhook]
url_out = "https://hr.example.com/attendance/check-out"
encoding = "form"
statuses = { "409" = "duplicate", "403" = "rejected", "5xx" = "transient" }

[uplink.webhook.fields]
rfid = "card_no"
at = "tapped_at"
"""


def test_webhook_section(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, WEBHOOK))
    webhook = loaded.uplink.webhook
    assert webhook.url_out == "https://hr.example.com/attendance/check-out"
    assert webhook.encoding == "form"
    assert webhook.fields == {"rfid": "card_no", "at": "tapped_at"}
    assert webhook.statuses["409"] == "duplicate"
    assert webhook.idempotency_header == "Idempotency-Key"


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ('"409" = "duplicate"', '"40" = "duplicate"', "[uplink.webhook] statuses", "not a status"),
        ('"409" = "duplicate"', '"409" = "fine"', "[uplink.webhook.statuses] 409", "'delivered'"),
        ('at = "tapped_at"', 'at = "time"', "[uplink.webhook.fields] at", "'tapped_at'"),
        ('token = "abc"\n', "", "[uplink] token", 'is required when auth = "bearer"'),
    ],
    ids=["status-key", "status-answer", "field", "auth-without-token"],
)
def test_bad_webhook(tmp_path: Path, old: str, new: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, replaced(old, new, WEBHOOK)))
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_bad_config_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, replaced('debounce = "3s"', 'debounce = "3x"'))
    done = command("check", "--config", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        done.stderr == f'gateagent: {path}: [taps] debounce: "3x" is not a duration '
        '(use seconds or "500ms", "30s", "10m", "2h")\n'
    )


def test_token_file_with_a_bom_and_a_newline(tmp_path: Path) -> None:
    token_file = secrets_sweep.exempt(tmp_path / "token")
    token_file.write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")  # Windows' Notepad
    path = write(tmp_path, replaced(f'token = "{TOKEN}"', f'token_file = "{token_file}"'))
    token = config.load(path).uplink.token
    assert token is not None and token.get_secret_value() == TOKEN


@pytest.mark.parametrize(
    ("token", "auth", "reason"),
    [
        ("abc\x07def1", "none", "holds a control or invisible character (U+0007 at position 4)"),
        ("abc\u200bdef1", "none", "holds a control or invisible character (U+200B at position 4)"),
        (
            "abcdéf12",
            "bearer",
            "holds a character an HTTP header cannot carry (U+00E9 at position 5)",
        ),
    ],
    ids=["control", "zero-width", "non-ascii-header"],
)
def test_a_token_that_cannot_travel_is_a_config_error(
    tmp_path: Path, token: str, auth: str, reason: str
) -> None:
    token_file = secrets_sweep.exempt(tmp_path / "token")
    token_file.write_text(token)
    text = replaced(f'token = "{TOKEN}"', f'token_file = "{token_file}"\nauth = "{auth}"')
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, text))
    assert error.value.key == "[uplink] token_file"
    assert reason in error.value.reason
    assert token not in str(error.value)


def test_a_non_ascii_token_is_fine_in_a_json_body(tmp_path: Path) -> None:
    token_file = secrets_sweep.exempt(tmp_path / "token")
    token_file.write_text("abcdéf12")
    config.load(write(tmp_path, replaced(f'token = "{TOKEN}"', f'token_file = "{token_file}"')))


def test_malformed_json_in_the_environment_is_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("GATEAGENT_READERS", "[{...")
    done = command("check", "--config", str(path))
    assert done.returncode == 2
    assert done.stderr == (
        f"gateagent: {path}: [readers]: GATEAGENT_READERS is not valid JSON: Expecting property"
        " name enclosed in double quotes: line 1 column 3 (char 2)\n"
    )


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ('proxy = "socks5://127.0.0.1:1080"', "[uplink] proxy", "needs the socksio package"),
        ('proxy = "proxy.school.lan:3128"', "[uplink] proxy", "is not a proxy URL"),
        ('ca_file = "/nonexistent/ca.pem"', "[uplink] ca_file", "cannot read /nonexistent/ca.pem"),
        ('key_file = "/etc/gateagent/gate.key"', "[uplink] key_file", "needs [uplink] cert_file"),
    ],
)
def test_bad_network_keys(tmp_path: Path, line: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, replaced("gate = 4\n", f"gate = 4\n{line}\n")))
    assert (error.value.key, reason in error.value.reason) == (key, True), error.value


def test_a_ca_file_that_is_not_pem(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, replaced("gate = 4\n", f'gate = 4\nca_file = "{bad}"\n')))
    assert error.value.key == "[uplink] ca_file"
    assert error.value.reason.startswith("is not a PEM certificate file")


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://attendance.school.lan/api", True),
        ("http://10.0.0.5:8080/api", True),
        ("https://attendance.school.lan/api", False),
        ("http://127.0.0.1:8080/api", False),
        ("http://localhost/api", False),
        ("http://[::1]:8080/api", False),
    ],
)
def test_clear_text_token_warning(tmp_path: Path, url: str, warned: bool) -> None:
    settings = config.load(
        write(tmp_path, replaced("https://api.example.sch.id/api/v1/attendances/integration", url))
    )
    warning = config.clear_text_token_warning(settings.uplink)
    assert (warning is not None) == warned
    if warning:
        assert warning.startswith("the token travels in clear text over http:// to ")
        assert TOKEN not in warning


# -- the token where the unit's LoadCredential= takes it from, and listen without [uplink]


def test_token_file_beside_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root shell has no $CREDENTIALS_DIRECTORY: `check` reads what the unit's
    LoadCredential= reads, /etc/gateagent/token beside /etc/gateagent/config.toml."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    secrets_sweep.exempt(tmp_path / "token").write_text(CREDENTIAL)
    token = config.load(write(tmp_path, replaced(f'token = "{TOKEN}"\n', ""))).uplink.token
    assert token is not None
    assert token.get_secret_value() == CREDENTIAL


def test_the_credential_wins_over_the_file_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_sweep.exempt(tmp_path / "token").write_text("beside\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secrets_sweep.exempt(credentials / "uplink-token").write_text(CREDENTIAL)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    token = config.load(write(tmp_path, replaced(f'token = "{TOKEN}"\n', ""))).uplink.token
    assert token is not None
    assert token.get_secret_value() == CREDENTIAL


def test_an_empty_token_file_beside_is_no_token(tmp_path: Path) -> None:
    """install.sh leaves /etc/gateagent/token empty for the technician to fill in."""
    (tmp_path / "token").write_text("")
    path = write(tmp_path, replaced(f'token = "{TOKEN}"\n', ""))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == (
        f"{path}: [uplink] token: is required by the integration profile (token, token_file,"
        f" the systemd credential uplink-token, or the file {tmp_path / 'token'})"
    )


def test_listen_reads_the_readers_without_any_uplink(tmp_path: Path) -> None:
    without = GOOD[: GOOD.index("[uplink]")]
    loaded = config.load_readers(write(tmp_path, without))
    assert [r.name for r in loaded.readers] == ["entrance", "exit"]
    assert loaded.taps.card_format == "dec10"
    no_token = config.load_readers(write(tmp_path, replaced(f'token = "{TOKEN}"\n', "")))
    assert no_token.device.timezone == "Asia/Jakarta"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param(GOOD + "\n[uplnk]\n", "[uplnk]", id="unknown-section"),
        pytest.param(replaced('kind = "hid"', 'kind = "usb"'), "[[readers]] #2 (exit) kind"),
        pytest.param(
            replaced('name = "exit"', 'name = "entrance"'), "[[readers]] #2 (entrance) name"
        ),
    ],
)
def test_listen_still_refuses_a_wrong_reader_or_section(
    tmp_path: Path, text: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load_readers(write(tmp_path, text))
    assert caught.value.key == key
