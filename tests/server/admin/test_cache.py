from __future__ import annotations

import httpx

from keel.cache.config import CacheScope
from keel.server.services import Services

Gateway = tuple[httpx.AsyncClient, str]


def _body(text: str) -> dict[str, object]:
    return {"model": "fake-model", "temperature": 0,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip


ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                       "finish_reason": "stop"}]}  # fmt: skip


async def test_stats_and_purge_of_the_callers_project(gateway: Gateway) -> None:
    client, key = gateway
    services: Services = client._transport.app.state.services  # type: ignore[attr-defined]
    cache = services.cache
    for route, prompt, text in [("chat", "faq@1", "a"), ("chat", None, "b"), ("rag", None, "c")]:
        scope = CacheScope("default", route, f"{route}@1", prompt=prompt)
        assert await cache.store(scope, _body(text), ANSWER, 0.001, 12.0)
    await cache.store(CacheScope("other", "chat", "chat@1"), _body("a"), ANSWER, None, 1.0)
    hit = await cache.lookup(CacheScope("default", "rag", "rag@1"), _body("c"))
    assert hit is not None
    headers = {"Authorization": f"Bearer {key}"}

    stats = (await client.get("/api/cache/stats", headers=headers)).json()
    assert (stats["backend"], stats["entries"], stats["hits_exact"]) == ("memory", 3, 1)

    purged = await client.post("/api/cache/purge", json={"prompt": "faq"}, headers=headers)
    assert purged.json() == {"purged": 1}
    by_entry = await client.post("/api/cache/purge", json={"entry_id": hit.entry_id},
                                 headers=headers)  # fmt: skip
    assert by_entry.json() == {"purged": 1}
    everything = await client.post("/api/cache/purge", json={}, headers=headers)
    assert everything.json() == {"purged": 1}  # what was left of this project: route chat, b
    assert (await cache.stats("other"))["entries"] == 1  # another tenant's entry stays

    audit = (await client.get("/api/audit", params={"action": "cache.purge"},
                              headers=headers)).json()  # fmt: skip
    assert [e["after"]["purged"] for e in audit["data"]] == [1, 1, 1]


async def test_purge_refuses_a_malformed_entry_id(gateway: Gateway) -> None:
    client, key = gateway
    response = await client.post(
        "/api/cache/purge", json={"entry_id": "../../x"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 400
    assert "error" in response.json()
