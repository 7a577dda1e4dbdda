"""Two `keel serve` processes over one PostgreSQL and one Redis, routing `chat` to a stub."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from keel.deploy.llamacpp import free_port
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.redis import temporary_redis_prefix
from tests.support.services import temporary_postgres_database
from tests.support.stub_server import StubProcess


@contextmanager
def two_keels(
    root: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[KeelProcess, KeelProcess]]:
    """(A, B): A created the admin key (use `a.api_key` on both); `env` adds settings."""
    stub = StubProcess("stub", free_port()).start()
    with temporary_postgres_database() as database, temporary_redis_prefix() as (url, prefix):
        shared = {"KEEL_DATABASE_URL": database, "KEEL_REDIS_URL": url,
                  "KEEL_REDIS_PREFIX": prefix, **(env or {})}  # fmt: skip
        flags = ("--no-local-model", "--no-embeddings")
        a = start_keel(root / "a", *flags, env=shared)  # creates the admin key first
        b = start_keel(root / "b", *flags, env=shared)
        try:
            a.api("PUT", "/api/providers/stub",
                  {"kind": "openai_compat", "base_url": stub.base_url})  # fmt: skip
            a.api("POST", "/api/models", {"name": "m", "provider": "stub", "upstream_model": "x"})
            a.api("PUT", "/api/routes/chat", {"targets": {"m@1": 100}})
            b_admin = {"Authorization": f"Bearer {a.api_key}"}
            for _ in range(100):  # B learns of the new route through the Redis change channel
                models = httpx.get(f"{b.base_url}/v1/models", headers=b_admin, timeout=5).json()
                if "chat" in [m["id"] for m in models["data"]]:
                    break
                time.sleep(0.05)
            yield a, b
        finally:
            a.stop()
            b.stop()
            stub.stop()
