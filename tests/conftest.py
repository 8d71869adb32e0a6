from __future__ import annotations

import os

import pytest

# The secrets sweep (issue 7) watches the whole session; pytester runs it on sessions of
# its own to show that it can fail (tests/test_secrets_sweep.py).
pytest_plugins = ["pytester", "tests.secrets_sweep"]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no GATEAGENT_* override and no systemd credential of the machine."""
    for name in list(os.environ):
        if name.startswith("GATEAGENT_") or name in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"):
            monkeypatch.delenv(name)
