"""gateagent.core stays pure (STYLE "What we don't do"): no I/O libraries imported.

Every module of the package is found with pkgutil, so modules added later are covered
too. Each is imported in a fresh interpreter (this one has imported everything
already), which also catches an I/O library pulled in indirectly, and names the module
that did it.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import gateagent.core

FORBIDDEN = ["sqlite_utils", "sqlite3", "httpx", "serial", "evdev", "socket"]

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(gateagent.core.__path__, gateagent.core.__name__ + ".")
)

SCRIPT = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[2:])))
"""


def test_modules_are_found() -> None:
    assert {"gateagent.core.frames", "gateagent.core.keys"} <= set(MODULES)


@pytest.mark.parametrize("module", ["gateagent.core", *MODULES])
def test_imports_no_io_library(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, module, *FORBIDDEN],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"{module} imports an I/O library"
