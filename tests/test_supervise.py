"""The supervisor with real tasks and threads: a component that raises is logged once
with its traceback, named by down() until its restart, and started again."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from gateagent.core.backoff import Backoff
from gateagent.supervise import Supervisor

# Backoff small enough for a test, with the same shape as the daemon's.
QUICK = Backoff(base_s=0.05, cap_s=0.2)


def test_a_task_that_raises_is_restarted_and_its_traceback_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(backoff=QUICK)
    runs = 0

    async def scenario() -> None:
        stop = asyncio.Event()
        done = asyncio.Event()

        async def flaky() -> None:
            nonlocal runs
            runs += 1
            if runs <= 3:
                raise RuntimeError(f"a bug, run {runs}")
            done.set()

        task = supervisor.task("uploader", flaky, stop)
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.wait_for(task, 10)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert runs == 4
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert "component failed: RuntimeError: a bug, run 1 name=uploader" in tracebacks[0].message
    # The second failure is logged once (no traceback), the third only counted.
    assert "a bug, run 2" in caplog.text
    assert "a bug, run 3" not in caplog.text
    assert supervisor.down() == {}


def test_a_task_down_is_named_until_it_restarts_and_stop_ends_its_backoff() -> None:
    supervisor = Supervisor(backoff=Backoff(base_s=60.0, cap_s=60.0))

    async def scenario() -> None:
        stop = asyncio.Event()
        failed = asyncio.Event()

        async def broken() -> None:
            failed.set()
            raise OSError("disk gone")

        task = supervisor.task("housekeeping", broken, stop)
        await failed.wait()
        await asyncio.sleep(0)  # let the supervisor take the failure
        while not supervisor.down():  # the failure is booked before the backoff wait
            await asyncio.sleep(0)
        assert set(supervisor.down()) == {"housekeeping"}
        stop.set()  # a stop during the backoff: no restart, and the task ends at once
        await asyncio.wait_for(task, 5)
        assert supervisor.down() == {}

    asyncio.run(scenario())


def test_a_thread_that_raises_is_restarted_until_stopped() -> None:
    supervisor = Supervisor(backoff=QUICK)
    stop = threading.Event()
    runs: list[int] = []
    third = threading.Event()

    def reader() -> None:
        runs.append(len(runs) + 1)
        if len(runs) == 3:
            third.set()
            stop.wait()  # runs until the stop, as a healthy reader does
            return
        raise ValueError("device bug")

    thread = supervisor.thread("reader entrance", reader, stop)
    assert third.wait(10)
    assert supervisor.down() == {}
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert runs == [1, 2, 3]


def test_a_thread_that_must_not_end_is_restarted_when_it_returns() -> None:
    supervisor = Supervisor(backoff=QUICK)
    stop = threading.Event()
    runs = 0
    again = threading.Event()

    def serial_reader() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            again.set()
            stop.wait()

    thread = supervisor.thread("reader door", serial_reader, stop, restart_on_return=True)
    assert again.wait(10)
    stop.set()
    thread.join(10)
    assert runs == 2


def test_a_thread_that_may_end_is_done_when_it_returns() -> None:
    supervisor = Supervisor(backoff=QUICK)
    stop = threading.Event()
    runs = 0

    def stdin_reader() -> None:
        nonlocal runs
        runs += 1

    thread = supervisor.thread("reader desk", stdin_reader, stop)
    thread.join(10)
    assert not thread.is_alive()
    assert runs == 1
    assert supervisor.down() == {}
