"""TEMPORARY, delete at the merge with the uploader's rewrite (issue 11).

The daemon is written against the new uploader: `Uploader(path, settings, *, transport,
on_state)` opening its own connection, and `wake(seq)`. Until that lands, the uploader
of this branch takes a `Store` and `wake()`: this gives it a connection of its own and
drops the seq. The merge replaces `from gateagent.uploader_seam import Uploader` in
daemon.py by `from gateagent.uplink.client import Uploader` and deletes this file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from gateagent.config import Config
from gateagent.store import Store
from gateagent.uplink import client


class Uploader:
    def __init__(
        self,
        path: Path,
        settings: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = Store.connect(path)
        self._inner = client.Uploader(self._store, settings, transport=transport, on_state=on_state)

    @property
    def state(self) -> str:
        return self._inner.state

    def wake(self, seq: int) -> None:
        self._inner.wake()

    def rescan(self) -> None:
        self._inner.rescan()

    def reconfigure(self, settings: Config) -> None:
        self._inner.reconfigure(settings)

    def alive(self) -> bool:
        return self._inner.alive()

    def tick(self) -> None:
        self._inner.tick()

    async def run(self, stopping: asyncio.Event) -> None:
        await self._inner.run(stopping)
