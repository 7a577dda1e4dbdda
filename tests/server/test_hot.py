"""The completion routes served outside FastAPI's routing fail, answer and document alike."""

from __future__ import annotations

from typing import Any

import httpx

Gateway = tuple[httpx.AsyncClient, str]
CHAT = "/v1/chat/completions"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_empty_body_says_a_json_object_is_required(gateway: Gateway) -> None:
    client, key = gateway
    response = await client.post(CHAT, content=b"  ", headers=_auth(key))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "a JSON object body is required"


async def test_the_key_is_checked_before_the_body(gateway: Gateway) -> None:
    client, _ = gateway
    response = await client.post(CHAT, content=b"{not json")
    assert response.status_code == 401
    assert "missing API key" in response.json()["error"]["message"]
    response = await client.post(CHAT, content=b"{}", headers={"Authorization": "Basic abc"})
    assert response.status_code == 401


async def test_the_answer_carries_the_request_ids(gateway: Gateway) -> None:
    client, key = gateway
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    response = await client.post(CHAT, json=body, headers=_auth(key) | {"X-Request-Id": "r-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "r-1"
    assert len(response.headers["x-keel-trace-id"]) == 32
    assert response.json()["choices"][0]["message"]["content"]


async def test_other_methods_on_a_hot_path_get_405_from_the_router(gateway: Gateway) -> None:
    client, key = gateway
    response = await client.get(CHAT, headers=_auth(key))
    assert response.status_code == 405
    assert "GET /v1/chat/completions" in response.json()["error"]["message"]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_openapi_documents_the_bodies_and_every_reference_resolves(
    gateway: Gateway,
) -> None:
    client, _ = gateway
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    for path, model in ((CHAT, "ChatCompletionRequest"), ("/v1/completions", "CompletionRequest")):
        post = schema["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert post["security"] == [{"HTTPBearer": []}]
    assert "messages" in components["ChatCompletionRequest"]["properties"]
    assert "ChatMessage" in components
    missing = {ref for ref in _refs(schema) if ref.split("/")[-1] not in components}
    assert not missing
