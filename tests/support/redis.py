"""A real Redis for tests, under a key prefix of their own that is deleted afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.support.services import port_open, require

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def temporary_redis_prefix() -> Iterator[tuple[str, str]]:
    """(url, prefix): a prefix no other run uses; every key under it is removed at the end."""
    require(port_open("127.0.0.1", 6379), "Redis on 127.0.0.1:6379")
    prefix = f"keel-test-{uuid.uuid4().hex[:12]}"
    try:
        yield REDIS_URL, prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
