from __future__ import annotations

import asyncio
import threading
from typing import Any

from gateagent.handoff import Handoff


def test_items_from_many_threads_all_arrive_in_each_threads_order() -> None:
    got: list[tuple[int, int]] = []

    async def scenario() -> None:
        handoff = Handoff(asyncio.get_running_loop(), got.append)

        def produce(thread: int) -> None:
            for n in range(2000):
                handoff.put((thread, n))

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        while len(got) < 8000:
            await asyncio.sleep(0.01)
        for thread in threads:
            thread.join()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert len(got) == 8000
    for t in range(4):
        assert [n for thread, n in got if thread == t] == list(range(2000))


def test_a_burst_costs_one_wake_up_of_the_loop() -> None:
    got: list[int] = []
    wake_ups = 0

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wake = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any) -> asyncio.Handle:
            nonlocal wake_ups
            wake_ups += 1
            return wake(callback, *args)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        handoff = Handoff(loop, got.append)
        burst = threading.Thread(target=lambda: [handoff.put(n) for n in range(100)])
        burst.start()
        burst.join()  # the loop did not run meanwhile: one wake-up is queued
        assert got == []
        await asyncio.sleep(0)  # one pass of the loop
        assert got == list(range(100))
        handoff.put(100)  # after a pass, the next item wakes the loop again
        await asyncio.sleep(0)
        assert got[-1] == 100

    asyncio.run(scenario())
    assert wake_ups == 2


def test_an_item_that_fails_does_not_strand_the_items_behind_it() -> None:
    got: list[int] = []

    def handle(item: int) -> None:
        if item == 1:
            raise ValueError("a bug in the handler")
        got.append(item)

    async def scenario() -> None:
        handoff = Handoff(asyncio.get_running_loop(), handle)
        for item in range(4):
            handoff.put(item)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert got == [0, 2, 3]
