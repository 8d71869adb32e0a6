"""Fuzz soak: generated bad input for the serial decoders, the HID key decoder and the
config loader, 100,000 inputs each (issue 7, "Bad input").

    .venv/bin/python benchmarks/fuzz_soak.py [--examples 100000] [--seed 1]

The strategies and invariants are those of `tests/test_fuzz.py` (`tests/fuzzing.py`),
which the test command runs with hypothesis' default 100 inputs: no exception escapes a
decoder; a frame holds only what was sent (rdm6300: with a good checksum); every frame,
in each of the 5 card formats with and without reverse_bytes, is a card number SPEC
calls plausible or InvalidCard (which the recorder drops), so an invalid card number
never becomes a tap; the config loader (through a file, as `gateagent run` reads it)
returns a Config or raises ConfigError, one line naming the file, without the token.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import machine
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fuzzing
from tests.fuzzing import (
    ConfigCheck,
    check_keys,
    check_serial,
    config_texts,
    key_scripts,
    serial_input,
)


def soak(
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any, Counter[str]], None],
    examples: int,
    seed_value: int,
) -> tuple[Counter[str], float, str | None]:
    """Run `check` on `examples` generated inputs: its tally, the seconds, a failure."""
    tally: Counter[str] = Counter()

    # database=None: a soak neither reads nor leaves hypothesis' example database;
    # deadline=None and no health checks: a slow input is not a failure here.
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(strategy)
    def run(value: Any) -> None:
        tally["inputs"] += 1
        check(value, tally)

    started = time.perf_counter()
    try:
        run()
    except Exception:  # the falsifying input and its traceback are the result
        return tally, time.perf_counter() - started, traceback.format_exc()
    return tally, time.perf_counter() - started, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # As the tests see it: no override or credential of this machine.
    for name in list(os.environ):
        if name.startswith("GATEAGENT_") or name == "CREDENTIALS_DIRECTORY":
            del os.environ[name]
    print(f"machine: {machine()}")
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        targets: list[tuple[str, st.SearchStrategy[Any], Callable[[Any, Counter[str]], None]]] = [
            (
                "serial rdm6300",
                serial_input("rdm6300"),
                lambda chunks, tally: check_serial("rdm6300", chunks, tally),
            ),
            (
                "serial lines",
                serial_input("lines"),
                lambda chunks, tally: check_serial("lines", chunks, tally),
            ),
            ("hid keys", key_scripts, check_keys),
            ("config file", config_texts, ConfigCheck(Path(folder))),
        ]
        for name, strategy, check in targets:
            tally, elapsed_s, failure = soak(strategy, check, args.examples, args.seed)
            failures += failure is not None
            figures = ", ".join(f"{key} {value:,}" for key, value in tally.items())
            print(f"{name}: {figures}; {elapsed_s:.0f} s; failures {int(failure is not None)}")
            if failure:
                print(failure)
    print(
        "card numbers and rejected count each frame in the 5 card formats, with and without"
        " reverse_bytes; rejected = InvalidCard, which the recorder drops"
    )
    print("RESULT", "FAIL" if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
