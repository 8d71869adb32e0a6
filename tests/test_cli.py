from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path

import pytest

from gateagent import config
from gateagent.cli import build_parser, main
from tests import secrets_sweep
from tests.running import command
from tests.settings import CREDENTIAL

ROOT = Path(__file__).parents[1]
SPEC_COMMANDS = ["run", "demo", "status", "readers", "listen", "check", "requeue", "export"]


def subcommands() -> dict[str, object]:
    parser = build_parser()
    for action in parser._actions:
        if action.dest == "command":
            return dict(action.choices)  # type: ignore[arg-type]
    raise AssertionError("no subcommands")


def test_every_spec_command_exists() -> None:
    assert sorted(subcommands()) == sorted(SPEC_COMMANDS)


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: gateagent {command}" in out
    assert f"Example: gateagent {command}" in out


@pytest.mark.parametrize("command", SPEC_COMMANDS)
def test_command_is_in_readme(command: str) -> None:
    assert re.search(rf"^    gateagent {command}\b", (ROOT / "README.md").read_text(), re.M)


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["frobnicate"])
    assert done.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_check_accepts_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets_sweep.exempt(tmp_path / "uplink-token").write_text(CREDENTIAL + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    main(["check", "--config", str(ROOT / "config.example.toml")])
    out = capsys.readouterr().out
    assert out.startswith(f"OK    config {ROOT / 'config.example.toml'}: profile integration")


def _keys(model: type, prefix: str) -> list[str]:
    found = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        sub = info.annotation
        if hasattr(sub, "model_fields") and name != "readers":
            found += _keys(sub, f"{prefix}{name}.")
        else:
            found.append(f"{prefix}{name}")
    return found


def test_every_config_key_is_in_the_example() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    text = (ROOT / "config.example.toml").read_text()
    for key in _keys(config.Config, ""):
        section, _, name = key.rpartition(".")
        if key == "readers":
            for reader_key in config.Reader.model_fields:
                assert re.search(rf"^{reader_key} = ", text, re.M), reader_key
            continue
        table = example
        for part in section.split(".") if section else []:
            table = table[part]
        assert name in table or re.search(rf"^# {name} = ", text, re.M), key


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo gateagent status` has")
def test_status_as_root_leaves_no_root_owned_files() -> None:
    # Not under pytest's tmp_path: its folders are root-only, /var/lib is not.
    with tempfile.TemporaryDirectory() as name:
        check_ownership(Path(name))


def check_ownership(tmp_path: Path) -> None:
    from gateagent.store import Store
    from tests.settings import make_settings, write_config

    state = tmp_path / "state"
    settings = make_settings(state, "http://127.0.0.1:9/x")
    state.mkdir(mode=0o755)
    Store.open(settings.storage.path).close()
    for path in [state, *state.iterdir()]:
        os.chown(path, 65534, 65534)  # nobody: stands for the gateagent user
    tmp_path.chmod(0o755)
    config = write_config(tmp_path / "config.toml", settings)
    config.chmod(0o644)
    done = command("status", "--config", str(config))
    assert done.returncode == 0, done.stderr
    owners = {path.name: path.stat().st_uid for path in state.iterdir()}
    assert set(owners.values()) == {65534}, owners


def test_listen_with_a_bad_reader_setting_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["listen", "--path", "/dev/ttyUSB9", "--baudrate", "0"]) == 2
    assert capsys.readouterr().err == (
        "gateagent: gateagent listen: baudrate: Input should be greater than 0\n"
    )


def test_export_into_a_pipe_closed_early_is_no_error(tmp_path: Path) -> None:
    import subprocess
    import sys
    import uuid
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from gateagent.store import NewTap, Store

    database = tmp_path / "taps.db"
    store = Store.open(database)
    store._conn.execute("PRAGMA synchronous = OFF")  # filling it fast; not what is tested
    for n in range(3000):  # more CSV than a pipe holds
        tap = NewTap(
            str(uuid.uuid4()), f"{n + 1:010d}", "desk", None, "in",
            datetime.now(UTC), float(n), "b", True,
        )  # fmt: skip
        store.record(tap, ZoneInfo("UTC"), 0.0, hold=False)
    store.close()
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{database}"\n')
    export = subprocess.Popen(
        [sys.executable, "-m", "gateagent", "export", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert export.stdout is not None and export.stderr is not None
    assert export.stdout.readline().startswith("tap_id,")
    export.stdout.close()  # as `head -1` does
    assert export.wait(60) == 0
    error = export.stderr.read()
    export.stderr.close()
    secrets_sweep.output(error)
    assert error == ""
