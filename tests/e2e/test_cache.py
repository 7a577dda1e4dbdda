"""Two Keel processes over one PostgreSQL and one Redis share the response cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.deploy.llamacpp import free_port
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.redis import temporary_redis_prefix
from tests.support.services import temporary_postgres_database
from tests.support.stub_server import StubProcess

pytestmark = pytest.mark.e2e
BODY = {"model": "chat", "temperature": 0, "max_tokens": 5,
        "messages": [{"role": "user", "content": "Which port does Keel listen on?"}]}  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeelProcess, KeelProcess]]:
    root: Path = tmp_path_factory.mktemp("shared-cache")
    stub = StubProcess("stub", free_port()).start()
    with temporary_postgres_database() as database, temporary_redis_prefix() as (url, prefix):
        env = {"KEEL_DATABASE_URL": database, "KEEL_REDIS_URL": url, "KEEL_REDIS_PREFIX": prefix,
               "KEEL_CACHE_BACKEND": "redis"}  # fmt: skip
        flags = ("--no-local-model", "--no-embeddings")
        a = start_keel(root / "a", *flags, env=env)
        b = start_keel(root / "b", *flags, env=env)
        try:
            a.api("PUT", "/api/providers/stub",
                  {"kind": "openai_compat", "base_url": stub.base_url})  # fmt: skip
            a.api("POST", "/api/models", {"name": "m", "provider": "stub", "upstream_model": "x"})
            a.api("PUT", "/api/routes/chat", {"targets": {"m@1": 100}})
            admin = {"Authorization": f"Bearer {a.api_key}"}
            for _ in range(100):  # B learns of the new route through the Redis change channel
                models = httpx.get(f"{b.base_url}/v1/models", headers=admin, timeout=5).json()
                if "chat" in [m["id"] for m in models["data"]]:
                    break
                time.sleep(0.05)
            yield a, b
        finally:
            a.stop()
            b.stop()
            stub.stop()


def ask(keel: KeelProcess, key: str) -> httpx.Response:
    return httpx.post(f"{keel.base_url}/v1/chat/completions", json=BODY, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})  # fmt: skip


def test_an_answer_cached_by_one_process_is_a_hit_on_the_other(
    pair: tuple[KeelProcess, KeelProcess],
) -> None:
    a, b = pair
    first = ask(a, a.api_key)
    assert first.status_code == 200, first.text
    assert first.headers["x-keel-cache"] == "miss"
    deadline = time.monotonic() + 10
    while True:  # A stores in the background, just after answering
        second = ask(b, a.api_key)
        if second.headers.get("x-keel-cache") == "hit-exact" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert second.status_code == 200
    assert second.headers["x-keel-cache"] == "hit-exact"
    assert second.json()["choices"] == first.json()["choices"]
    stats = httpx.get(f"{b.base_url}/api/cache/stats", timeout=10,
                      headers={"Authorization": f"Bearer {a.api_key}"}).json()  # fmt: skip
    assert stats["backend"] == "redis"
    assert stats["entries"] >= 1
    assert stats["hits_exact"] >= 1
