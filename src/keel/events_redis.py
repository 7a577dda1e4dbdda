"""The change bus across replicas: local delivery at once, and Redis pub/sub to the others.

Each process subscribes to one channel and ignores its own messages. After a lost
connection it tells every local subscriber that anything may have changed (key "*").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import orjson
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from keel.events import Change, Handler, LocalChangeBus

log = logging.getLogger("keel.events")


class RedisChangeBus:
    def __init__(self, url: str, prefix: str):
        self._url = url
        self._channel = f"{prefix.rstrip(':')}:changes"
        self._origin = os.urandom(8).hex()
        self._local = LocalChangeBus()
        self._topics: set[str] = set()
        # Publishing happens in worker threads (after a control-plane commit): a sync client.
        self._publisher = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.connected = False
        # Exported as metrics.
        self.publish_failures = 0
        self.reconnects = 0

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._topics.add(topic)
        self._local.subscribe(topic, handler)

    def publish(self, change: Change) -> None:
        self._local.publish(change)
        message = orjson.dumps({"origin": self._origin, "topic": change.topic, "key": change.key,
                                "project_id": change.project_id})  # fmt: skip
        try:
            self._publisher.publish(self._channel, message)
        except (RedisError, OSError) as exc:
            # Other replicas miss this change until their caches refresh; say so loudly.
            self.publish_failures += 1
            log.warning("could not publish change %s/%s to Redis: %s", change.topic, change.key,
                        exc)  # fmt: skip

    async def start(self, wait: float = 2.0) -> None:
        """Start listening; waits (up to `wait` s) until subscribed, so no change is missed."""
        self._task = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait)

    def _deliver(self, data: bytes) -> None:
        try:
            fields = orjson.loads(data)
            if fields.get("origin") == self._origin:
                return
            change = Change(str(fields["topic"]), str(fields["key"]), str(fields["project_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed change message on %s", self._channel)
            return
        self._local.publish(change)

    def _resync(self) -> None:
        for topic in sorted(self._topics):
            self._local.publish(Change(topic, "*", "*"))

    async def _listen(self) -> None:
        delay = 0.2
        lost = False
        while True:
            client = aioredis.Redis.from_url(self._url, socket_connect_timeout=0.5)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        self.connected, delay = True, 0.2
                        self._subscribed.set()
                        if lost:
                            self._resync()  # changes published while away were missed
                    elif message["type"] == "message":
                        self._deliver(message["data"])
            except (RedisError, OSError) as exc:
                if self.connected or not lost:
                    log.warning("lost the Redis change channel (%s); retrying", exc)
                self.connected, lost = False, True
                self.reconnects += 1
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def status(self) -> dict[str, object]:
        return {
            "ready": True,  # local changes still apply; other replicas catch up on reconnect
            "state": "subscribed" if self.connected else "degraded: Redis channel not connected",
            "publish_failures": self.publish_failures,
        }

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._publisher.close()
