from __future__ import annotations

import base64
import json

import httpx
import numpy as np

from tests.support.upstream import FakeUpstream

Gateway = tuple[httpx.AsyncClient, str]
MSG = [{"role": "user", "content": "hi"}]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def events(text: str) -> list[dict | str]:  # type: ignore[type-arg]
    out: list[dict | str] = []  # type: ignore[type-arg]
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_chat_answers_under_the_clients_model_name(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": MSG, "max_completion_tokens": 9, "top_k": 3},
        headers={**auth(key), "X-Request-Id": "req-123"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "fake-model"
    assert body["choices"][0]["message"]["content"] == upstream.reply
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    sent = upstream.requests[-1]
    assert sent["model"] == "upstream-model"
    assert sent["max_tokens"] == 9
    assert "max_completion_tokens" not in sent
    assert sent["top_k"] == 3  # provider-specific options pass through
    assert response.headers["x-request-id"] == "req-123"
    assert len(response.headers["x-keel-trace-id"]) == 32


async def test_usage_is_filled_when_the_upstream_reports_none(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    upstream.report_usage = False
    client, key = gateway
    body = {"model": "fake-model", "messages": MSG}
    response = await client.post("/v1/chat/completions", json=body, headers=auth(key))
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    streamed = await client.post(
        "/v1/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        headers=auth(key),
    )
    last_chunk = events(streamed.text)[-2]
    assert isinstance(last_chunk, dict)
    assert last_chunk["usage"]["completion_tokens"] > 0


async def test_stream_relays_chunks_then_usage_then_done(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": MSG, "stream": True,
              "stream_options": {"include_usage": True}},
        headers=auth(key),
    )  # fmt: skip
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = events(response.text)
    assert stream[-1] == "[DONE]"
    chunks = [e for e in stream[:-2] if isinstance(e, dict)]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == upstream.reply
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["model"] == "fake-model" for c in chunks)
    usage_chunk = stream[-2]
    assert isinstance(usage_chunk, dict)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(upstream.reply.split(" "))
    assert upstream.requests[-1]["stream_options"] == {"include_usage": True}


async def test_stream_without_include_usage_sends_no_usage_chunk(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    body = {"model": "fake-model", "messages": MSG, "stream": True}
    response = await client.post("/v1/chat/completions", json=body, headers=auth(key))
    stream = events(response.text)
    assert all(e == "[DONE]" or e["choices"] for e in stream)  # type: ignore[index]


async def test_text_completions(gateway: Gateway, upstream: FakeUpstream) -> None:
    client, key = gateway
    response = await client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": ["Once"]}, headers=auth(key)
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == upstream.reply
    assert upstream.requests[-1]["prompt"] == "Once"


async def test_embeddings_as_floats_and_base64_agree(gateway: Gateway) -> None:
    client, key = gateway
    body = {"model": "fake-embed", "input": ["one", "two"]}
    floats = (await client.post("/v1/embeddings", json=body, headers=auth(key))).json()
    packed = (
        await client.post(
            "/v1/embeddings", json={**body, "encoding_format": "base64"}, headers=auth(key)
        )
    ).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    for plain, b64 in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b64["embedding"]), dtype="<f4")
        assert np.allclose(decoded, plain["embedding"])
    assert floats["usage"]["prompt_tokens"] == 2


async def test_models_lists_chat_and_embedding_models(gateway: Gateway) -> None:
    client, key = gateway
    ids = [m["id"] for m in (await client.get("/v1/models", headers=auth(key))).json()["data"]]
    assert ids == ["fake-embed", "fake-model"]


async def test_health_needs_no_key_and_readiness_reports_checks(gateway: Gateway) -> None:
    client, _ = gateway
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["embeddings:fake-embed"]["ready"] is True
