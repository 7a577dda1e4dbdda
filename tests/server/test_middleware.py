from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

Gateway = tuple[httpx.AsyncClient, str]
BODY = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'


async def test_chunked_body_over_the_limit_is_413(gateway: Gateway) -> None:
    client, key = gateway

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024  # 100 KiB of whitespace, no Content-Length

    response = await client.post(
        "/v1/chat/completions", content=chunks(), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]["message"]


async def test_chunked_body_within_the_limit_is_served(gateway: Gateway) -> None:
    client, key = gateway

    async def chunks() -> AsyncIterator[bytes]:
        yield BODY[:20]
        yield BODY[20:]

    response = await client.post(
        "/v1/chat/completions", content=chunks(), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


async def test_json_sent_as_a_form_is_still_read_as_json(gateway: Gateway) -> None:
    client, key = gateway  # what `curl -d` does when the Content-Type header is forgotten
    response = await client.post(
        "/v1/chat/completions",
        content=BODY,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 200


async def test_every_response_carries_trace_and_request_ids(gateway: Gateway) -> None:
    client, _ = gateway
    for response in (
        await client.get("/healthz"),
        await client.get("/v1/models"),  # 401
        await client.get("/missing"),  # 404
    ):
        assert len(response.headers["x-keel-trace-id"]) == 32
        assert response.headers["x-request-id"]
    unsafe = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] == unsafe.headers["x-keel-trace-id"]
