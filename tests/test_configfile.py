from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateagent import config
from gateagent.configfile import DEFAULT_STORAGE_PATH, storage_path
from gateagent.errors import ConfigError
from gateagent.store import Store

# The rest of a valid file: config.load() needs it, storage_path() does not read it.
REST = """
[[readers]]
name = "desk"
kind = "stdin"
[uplink]
url = "http://127.0.0.1:9/"
token = "not-a-real-token"
gate = 4
"""


@pytest.mark.parametrize(
    ("storage", "environ", "expected"),
    [
        ('[storage]\npath = "/srv/taps.db"\n', {}, Path("/srv/taps.db")),
        ("", {}, DEFAULT_STORAGE_PATH),
        ('[storage]\npath = "/srv/taps.db"\n', {"GATEAGENT_STORAGE__PATH": "/e.db"}, Path("/e.db")),
        ("", {"gateagent_storage__path": "/lower.db"}, Path("/lower.db")),
        ('[storage]\npath = "relative/taps.db"\n', {}, Path("relative/taps.db")),
    ],
    ids=["file", "default", "environment", "environment-any-case", "relative"],
)
def test_storage_path_is_what_config_load_gives(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    storage: str,
    environ: dict[str, str],
    expected: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(storage + REST)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert storage_path(str(path)) == expected
    assert config.load(path).storage.path == expected


def test_a_storage_path_that_is_not_text_is_refused_by_the_full_validation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[storage]\npath = 5\n" + REST)
    with pytest.raises(ConfigError) as caught:
        storage_path(str(path), {})
    assert caught.value.key == "[storage] path"


def test_status_needs_neither_the_token_nor_pydantic(tmp_path: Path) -> None:
    database = tmp_path / "taps.db"
    Store.open(database).close()
    config = tmp_path / "config.toml"
    # No token and a bad key elsewhere: `run` would refuse it; `status` reads the database.
    config.write_text(f'[storage]\npath = "{database}"\n[uplink]\nflush_interval = "30x"\n')
    script = (
        "import sys; from gateagent.cli import main; code = main(sys.argv[1:]);"
        " assert 'pydantic' not in sys.modules, 'pydantic imported'; sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"pending": 0' in done.stdout
