"""The bad-input table of docs/api.md: each malformed request, its status and error type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]

# (case, path, body or raw bytes, status, error type, param) — mirrored row by row in docs/api.md
BAD_INPUT: list[tuple[str, str, Any, int, str, str | None]] = [
    ("malformed JSON", CHAT, b'{"model": ', 400, "invalid_request_error", None),
    ("body is not an object", CHAT, [1, 2], 400, "invalid_request_error", None),
    ("missing model", CHAT, {"messages": MSG}, 400, "invalid_request_error", "model"),
    ("missing messages", CHAT, {"model": "fake-model"}, 400, "invalid_request_error", "messages"),
    ("empty messages", CHAT, {"model": "fake-model", "messages": []}, 400,
     "invalid_request_error", "messages"),
    ("unknown role", CHAT, {"model": "fake-model", "messages": [{"role": "robot",
     "content": "x"}]}, 400, "invalid_request_error", "messages[0].role"),
    ("temperature out of range", CHAT, {"model": "fake-model", "messages": MSG,
     "temperature": 3}, 400, "invalid_request_error", "temperature"),
    ("temperature as a string", CHAT, {"model": "fake-model", "messages": MSG,
     "temperature": "0.5"}, 400, "invalid_request_error", "temperature"),
    ("max_tokens zero", CHAT, {"model": "fake-model", "messages": MSG, "max_tokens": 0}, 400,
     "invalid_request_error", "max_tokens"),
    ("n above 8", CHAT, {"model": "fake-model", "messages": MSG, "n": 9}, 400,
     "invalid_request_error", "n"),
    ("n zero", CHAT, {"model": "fake-model", "messages": MSG, "n": 0}, 400,
     "invalid_request_error", "n"),
    ("n above 1 streamed", CHAT, {"model": "fake-model", "messages": MSG, "n": 2,
     "stream": True}, 400, "invalid_request_error", "n"),
    ("five stop sequences", CHAT, {"model": "fake-model", "messages": MSG,
     "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_request_error", "stop"),
    ("unknown response_format", CHAT, {"model": "fake-model", "messages": MSG,
     "response_format": {"type": "yaml"}}, 400, "invalid_request_error", "response_format.type"),
    ("unknown model", CHAT, {"model": "gpt-5", "messages": MSG}, 404, "invalid_request_error",
     "model"),
    ("embedding model on chat", CHAT, {"model": "fake-embed", "messages": MSG}, 400,
     "invalid_request_error", "model"),
    ("completion with two prompts", "/v1/completions", {"model": "fake-model",
     "prompt": ["a", "b"]}, 400, "invalid_request_error", "prompt"),
    ("embeddings with no input", "/v1/embeddings", {"model": "fake-embed"}, 400,
     "invalid_request_error", "input"),
    ("embeddings of an empty string", "/v1/embeddings", {"model": "fake-embed", "input": ""},
     400, "invalid_request_error", "input"),
    ("embeddings of token ids", "/v1/embeddings", {"model": "fake-embed", "input": [1, 2]},
     400, "invalid_request_error", "input"),
    ("embeddings in an unknown format", "/v1/embeddings", {"model": "fake-embed",
     "input": "x", "encoding_format": "int8"}, 400, "invalid_request_error", "encoding_format"),
    ("embeddings with wrong dimensions", "/v1/embeddings", {"model": "fake-embed",
     "input": "x", "dimensions": 3}, 400, "invalid_request_error", "dimensions"),
    ("chat model on embeddings", "/v1/embeddings", {"model": "fake-model", "input": "x"}, 400,
     "invalid_request_error", "model"),
    ("body over the limit", CHAT, {"model": "fake-model", "messages": [{"role": "user",
     "content": "x" * 70_000}]}, 413, "invalid_request_error", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "status", "error_type", "param"),
    [row[1:] for row in BAD_INPUT],
    ids=[row[0] for row in BAD_INPUT],
)
async def test_bad_input_gets_a_clear_4xx(
    gateway: tuple[httpx.AsyncClient, str],
    path: str,
    body: Any,
    status: int,
    error_type: str,
    param: str | None,
) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    if isinstance(body, bytes):
        response = await client.post(path, content=body, headers=headers)
    else:
        response = await client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["param"] == param
    assert len(error["message"]) > 20  # says what is wrong, not just "error"
    assert response.headers["x-keel-trace-id"]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer sk-not-a-keel-key"}, "invalid API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing API key"),
    ],
)
async def test_requests_without_a_valid_key_get_401(
    gateway: tuple[httpx.AsyncClient, str], headers: dict[str, str], fragment: str
) -> None:
    client, _ = gateway
    response = await client.post(
        CHAT, json={"model": "fake-model", "messages": MSG}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert fragment in response.json()["error"]["message"]


async def test_unknown_route_and_method_name_the_request(
    gateway: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = gateway
    missing = await client.get("/v1/nothing", headers={"Authorization": f"Bearer {key}"})
    assert missing.status_code == 404
    assert "/v1/nothing" in missing.json()["error"]["message"]
    wrong = await client.get(CHAT, headers={"Authorization": f"Bearer {key}"})
    assert wrong.status_code == 405


def test_docs_list_every_bad_input_case() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    rows = {line.split("|")[1].strip() for line in docs.splitlines() if line.startswith("| ")}
    missing = [row[0] for row in BAD_INPUT if row[0] not in rows]
    assert missing == []
