"""The event loop's way to SQLite: one thread with its own connection.

A commit waits for an fsync, and any statement may wait up to SQLite's busy timeout for
another writer (a `gateagent requeue`, a `sqlite3` shell left inside a transaction, a
backup). On the event loop that wait would freeze uploads, signals and the watchdog, so
the loop hands the work to this thread and awaits the result instead (issue 11).

A call that failed closes the connection; the next call opens a new one, so a database
that was locked, full or briefly missing is used again as soon as it can be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateagent.store import Store

T = TypeVar("T")


class DbThread:
    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._store: Store | None = None

    async def call(self, work: Callable[[Store], T]) -> T:
        """Run `work` with this thread's Store; its StoreError (or any error) is raised here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = Store.connect(self._path)
        try:
            return work(self._store)
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def close(self) -> None:
        """Finish the work handed over so far, then close the connection."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)
