"""Scheduler soak: the delivery scheduler's state machine test, run for longer (issue 11).

    .venv/bin/python benchmarks/schedule_soak.py [--examples 20000] [--steps 200]

The machine is `tests/core/test_schedule.py`'s `Delivery`, which the test command runs
with 300 examples of 60 steps: random interleavings of taps, pages, answers of every
kind, answer writes, clock steps, reloads, rescans and stops, checked against a
reference model (per-card order, one request per card, concurrency, one probe while
failing, the flush grid, the ambiguous guard, a stop within FINISH_S, every tap
delivered once the server answers, no wait longer than the longest rule). Prints the
examples and steps run and the time taken; exits 1 with hypothesis' shortest failing
sequence if any invariant breaks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness import machine
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.core
from tests.core.test_schedule import Delivery


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    print(machine())
    steps = 0

    class Counted(Delivery):
        def _act(self):  # type: ignore[no-untyped-def]
            nonlocal steps
            steps += 1
            return super()._act()

    started = time.perf_counter()
    run_state_machine_as_test(
        Counted,
        settings=settings(
            max_examples=args.examples,
            stateful_step_count=args.steps,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    elapsed = time.perf_counter() - started
    print(
        f"schedule soak: {args.examples} examples of up to {args.steps} steps,"
        f" {steps:,} scheduler rounds, {elapsed:.0f} s: no invariant broken"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
