"""Supervision: every task and thread the daemon starts runs under one `Supervisor`.

A gate runs unattended for years, so a component that fails must neither end silently
nor take the daemon down (issue 11, "Supervision"):

- an unexpected exception is logged once with its traceback, later ones of the same
  component through `Repeats` (once, then summarised; SPEC "Operations");
- the component is started again after a backoff with full jitter (`core/backoff.py`),
  growing while it keeps failing and starting over once it ran `HEALTHY_S` without one;
- while it is down (between its failure and its restart) `down()` names it, for the
  watchdog and `STATUS=`.

A component that returns normally is done (a stdin reader at the end of its input, a
loop that saw the stop), unless it was started with `restart_on_return` (hid and serial
readers never end on their own, so their end is a failure too).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateagent.core.backoff import Backoff
from gateagent.logs import Repeats

log = logging.getLogger(__name__)

# Restarts come quickly at first (a transient fault heals in a moment) and slow down to
# one every half minute: a component failing for good costs a log summary, not a spin.
RESTART = Backoff(base_s=0.5, cap_s=30.0)
# A component that ran this long since its last restart is healthy again.
HEALTHY_S = 60.0


@dataclass
class _Component:
    name: str
    failures: int = 0
    traced: bool = False
    down_since: float | None = None


class Supervisor:
    def __init__(
        self,
        *,
        backoff: Backoff = RESTART,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backoff = backoff
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._monotonic = monotonic
        self._repeats = Repeats(log)
        # Threads report failures too: the table is shared with them.
        self._lock = threading.Lock()
        self._components: dict[str, _Component] = {}

    # -- what the daemon asks ------------------------------------------------------

    def down(self) -> dict[str, float]:
        """Components failed and not restarted yet, each with the seconds it has been down."""
        now = self._monotonic()
        with self._lock:
            return {
                c.name: now - c.down_since
                for c in self._components.values()
                if c.down_since is not None
            }

    def tick(self, now: float) -> None:
        """Log the summaries of repeated failures whose window has passed."""
        self._repeats.tick(now)

    # -- tasks on the event loop -----------------------------------------------------

    def task(
        self, name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> asyncio.Task[None]:
        """Run `run()` on the loop until it returns; after an exception, again after a
        backoff, unless `stop` is set meanwhile. Cancelling the task ends it."""
        component = self._component(name)
        return asyncio.ensure_future(self._keep_task(component, run, stop))

    async def _keep_task(
        self, component: _Component, run: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        while True:
            started = self._monotonic()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._failed(component, exc, started)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                self._restarted(component)
                continue
            self._restarted(component)  # stopping: not restarted, and not down any more
            return

    # -- threads ---------------------------------------------------------------------

    def thread(
        self,
        name: str,
        run: Callable[[], None],
        stop: threading.Event,
        *,
        restart_on_return: bool = False,
    ) -> threading.Thread:
        """Run `run()` in a daemon thread (a read blocked in the kernel never delays
        exit); after an exception (or any return, with `restart_on_return`), again
        after a backoff, until `stop` is set."""
        component = self._component(name)

        def keep() -> None:
            while not stop.is_set():
                started = self._monotonic()
                try:
                    run()
                except Exception as exc:
                    delay = self._failed(component, exc, started)
                else:
                    if not restart_on_return or stop.is_set():
                        return
                    delay = self._failed(component, None, started)
                stopped = stop.wait(delay)
                self._restarted(component)
                if stopped:
                    return

        thread = threading.Thread(target=keep, name=name.replace(" ", "-"), daemon=True)
        thread.start()
        return thread

    # -- bookkeeping -------------------------------------------------------------------

    def _component(self, name: str) -> _Component:
        with self._lock:
            # A component started again under its name (a reader after a reload) starts
            # with a clean record.
            component = self._components[name] = _Component(name)
            return component

    def _failed(self, component: _Component, error: Exception | None, started: float) -> float:
        now = self._monotonic()
        with self._lock:
            if now - started >= HEALTHY_S:
                component.failures = 0
            component.failures += 1
            component.down_since = now
            delay = self._backoff.delay(component.failures, None, self._rng)
            first_trace = error is not None and not component.traced
            if first_trace:
                component.traced = True
        what = "ended" if error is None else f"failed: {type(error).__name__}: {error}"
        message = f"component {what} name={component.name} restart_in_s={delay:.1f}"
        if first_trace:
            log.error(message, exc_info=error)  # the traceback once per component
        else:
            self._repeats.report(f"component:{component.name}", logging.ERROR, message, now)
        return delay

    def _restarted(self, component: _Component) -> None:
        with self._lock:
            component.down_since = None
