"""The configuration file as written, before validation: where it is, its TOML, and
the one key that `status`, `export` and `requeue` need (the database's path).

Apart from config.py so that those commands start without pydantic, which alone costs
more than the 100 ms a `gateagent status` may take (benchmarks/bigdb.py). They read the
database only, so they work even while another key of the file is wrong, and they need
no token.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateagent.errors import ConfigError

DEFAULT_PATH = "/etc/gateagent/config.toml"
ENV_PREFIX = "GATEAGENT_"
DEFAULT_STORAGE_PATH = Path("/var/lib/gateagent/taps.db")


def config_path(arg: str | None, environ: Mapping[str, str] | None = None) -> str:
    """`--config PATH`, else `$GATEAGENT_CONFIG`, else /etc/gateagent/config.toml."""
    env = os.environ if environ is None else environ
    return arg or env.get(ENV_PREFIX + "CONFIG") or DEFAULT_PATH


def read_toml(where: str) -> dict[str, Any]:
    try:
        with open(where, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(where, "", f"cannot read the file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(where, "", "not valid TOML: the file is not UTF-8 text") from None


def storage_path(where: str, environ: Mapping[str, str] | None = None) -> Path:
    """`[storage] path` as `config.load()` would give it: the environment's
    GATEAGENT_STORAGE__PATH, else the file's, else the default."""
    env = os.environ if environ is None else environ
    # pydantic-settings matches environment names case-insensitively.
    wanted = ENV_PREFIX + "STORAGE__PATH"
    for name, text in env.items():
        if name.upper() == wanted:
            return Path(text)
    storage = read_toml(where).get("storage", {})
    value = storage.get("path", DEFAULT_STORAGE_PATH) if isinstance(storage, dict) else None
    if isinstance(value, str | Path) and str(value).strip():
        return Path(value)
    # Not a usable path: the full validation says what is wrong in its own words.
    from gateagent import config  # noqa: PLC0415 (pydantic only on this rare path)

    return config.load(where).storage.path
