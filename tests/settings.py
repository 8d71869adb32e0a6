"""Building a `Config` in a test, as a technician's file would (not part of the package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateagent.config import Config
from tests import secrets_sweep

TOKEN = secrets_sweep.secret("test-T0KEN-e5N7Zq4Szsw3TbFp5o8rNh", "tests/settings.py TOKEN")
# The uplink-token credential tests put in $CREDENTIALS_DIRECTORY.
CREDENTIAL = secrets_sweep.secret("from-the-credential", "tests/settings.py CREDENTIAL")


def make_settings(tmp_path: Path, url: str, **sections: dict[str, Any]) -> Config:
    """A valid configuration with one stdin reader; `sections` override keys per section."""
    data: dict[str, Any] = {
        "device": {"name": "gate-test", "timezone": "Asia/Jakarta", "require_clock_sync": False},
        "storage": {"path": str(tmp_path / "taps.db")},
        "taps": {"debounce": "3s"},
        "readers": [{"name": "desk", "kind": "stdin"}],
        "uplink": {"url": url, "token": TOKEN, "gate": 4, "flush_interval": "0s"},
        # Not /var/lib/prometheus/node-exporter, where node_exporter would publish it.
        "metrics": {"textfile": str(tmp_path / "gateagent.prom")},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return Config(**data)


def write_config(path: Path, settings: Config) -> Path:
    """The TOML file a technician would write for `settings` (for subprocess tests); it
    holds the token, so the secrets sweep leaves it out."""
    secrets_sweep.exempt(path)
    lines: list[str] = []
    dumped = settings.model_dump(mode="json", exclude={"readers"})
    token = settings.uplink.token.get_secret_value() if settings.uplink.token else None
    for section, values in dumped.items():
        lines.append(f"[{section}]")
        nested = {}
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, dict):
                nested[key] = value
                continue
            lines.append(f"{key} = {_toml(token if key == 'token' else value)}")
        for name, table in nested.items():
            lines.append(f"[{section}.{name}]")
            for key, value in table.items():
                if value is not None:
                    lines.append(f"{key} = {_toml(value)}")
    for reader in settings.readers:
        lines.append("[[readers]]")
        for key, value in reader.model_dump(mode="json").items():
            if value is not None:
                lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
