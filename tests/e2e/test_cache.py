"""Two Keel processes over one PostgreSQL and one Redis share the response cache."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.keel_process import KeelProcess
from tests.support.pair import two_keels

pytestmark = pytest.mark.e2e
BODY = {"model": "chat", "temperature": 0, "max_tokens": 5,
        "messages": [{"role": "user", "content": "Which port does Keel listen on?"}]}  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeelProcess, KeelProcess]]:
    with two_keels(
        tmp_path_factory.mktemp("shared-cache"), {"KEEL_CACHE_BACKEND": "redis"}
    ) as keels:
        yield keels


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
