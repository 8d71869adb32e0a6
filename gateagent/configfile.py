"""The configuration file as written, before validation: where it is, its TOML, and
the few keys that `status`, `export` and `requeue` need (the database's path, the
gate's time zone, `[uplink] gate`).

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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateagent.errors import ConfigError

DEFAULT_PATH = "/etc/gateagent/config.toml"
ENV_PREFIX = "GATEAGENT_"
DEFAULT_STORAGE_PATH = Path("/var/lib/gateagent/taps.db")
DEFAULT_TIMEZONE = "Asia/Jakarta"  # config.Device's default


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


def _key(
    where: str, section: str, key: str, environ: Mapping[str, str] | None, data: Any = None
) -> object:
    """The environment's GATEAGENT_<SECTION>__<KEY>, else the file's value, else None."""
    env = os.environ if environ is None else environ
    wanted = f"{ENV_PREFIX}{section}__{key}".upper()
    for name, text in env.items():
        if name.upper() == wanted:
            return text
    table = (read_toml(where) if data is None else data).get(section, {})
    return table.get(key) if isinstance(table, dict) else None


def device_timezone(
    where: str, environ: Mapping[str, str] | None = None, data: Any = None
) -> ZoneInfo:
    """`[device] timezone` (default Asia/Jakarta), the zone of the times shown to a
    person (core/localtime.py); ConfigError when it is not a known zone."""
    value = _key(where, "device", "timezone", environ, data)
    name = DEFAULT_TIMEZONE if value is None else value
    try:
        if not isinstance(name, str):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            where, "[device] timezone", f'"{name}" is not a known time zone (e.g. "Asia/Jakarta")'
        ) from None


def uplink_gate(
    where: str, environ: Mapping[str, str] | None = None, data: Any = None
) -> int | None:
    """`[uplink] gate`, the gate of a tap whose reader sets none; None when unset."""
    value = _key(where, "uplink", "gate", environ, data)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ConfigError(where, "[uplink] gate", f"{value!r} is not a gate number")
