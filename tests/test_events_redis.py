from __future__ import annotations

import asyncio

from keel.events import Change
from keel.events_redis import RedisChangeBus
from tests.support.redis import temporary_redis_prefix


async def test_a_change_reaches_the_other_process_once_and_this_one_at_once() -> None:
    with temporary_redis_prefix() as (url, prefix):
        here, there = RedisChangeBus(url, prefix), RedisChangeBus(url, prefix)
        seen_here: list[Change] = []
        seen_there: list[Change] = []
        arrived = asyncio.Event()
        loop = asyncio.get_running_loop()
        here.subscribe("keys", seen_here.append)

        def on_there(change: Change) -> None:
            seen_there.append(change)
            loop.call_soon_threadsafe(arrived.set)

        there.subscribe("keys", on_there)
        await here.start()
        await there.start()
        try:
            assert there.status()["state"] == "subscribed"
            change = Change("keys", "abc123", "default")
            await asyncio.to_thread(here.publish, change)  # as a control-plane write does
            assert seen_here == [change]  # delivered locally before publish returns
            await asyncio.wait_for(arrived.wait(), 5)
            assert seen_there == [change]
            await asyncio.sleep(0.1)
            assert seen_here == [change]  # its own message is not delivered twice
        finally:
            await here.close()
            await there.close()
