"""Traces of real requests to the bundled model, through a real `keel serve`."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from keel.deploy.bundled import smollm2_gguf
from tests.support.keel_process import KeelProcess

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "user", "content": "Say hi"}]


def stored_trace(keel: KeelProcess, trace_id: str, wait: float = 30) -> dict[str, Any]:
    """The trace once the batch writer has stored it (it writes every fraction of a second)."""
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    deadline = time.monotonic() + wait
    while True:
        response = httpx.get(f"{keel.base_url}/api/traces/{trace_id}", headers=headers)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            found: dict[str, Any] = response.json()
            return found
        time.sleep(0.1)


def count_tokens(text: str) -> int:
    """Tokens of `text` in the bundled model's own vocabulary (loaded vocab-only)."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(smollm2_gguf()), vocab_only=True, verbose=False)
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def test_a_streamed_answer_is_traced_with_ttft_and_the_exact_token_counts(
    keel: KeelProcess,
) -> None:
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    body = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 24, "temperature": 0}
    # llama.cpp's own count of the prompt; the answer's text may differ between two runs
    # even at temperature 0, so the output is checked against the stream's own events.
    whole = httpx.post(f"{keel.base_url}/v1/chat/completions", json=body, headers=headers,
                       timeout=120).json()  # fmt: skip
    # No include_usage: the client does not ask for usage, and llama.cpp reports none in
    # streams, so the trace's counts are Keel's own, with the model's tokenizer.
    # The same request again would be a cache hit (no tokens used): go to the model.
    fresh = {**headers, "X-Keel-Cache": "refresh"}
    with httpx.stream("POST", f"{keel.base_url}/v1/chat/completions", headers=fresh,
                      json={**body, "stream": True}, timeout=120) as response:  # fmt: skip
        assert response.status_code == 200
        trace_id = response.headers["x-keel-trace-id"]
        events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines()
                  if line.startswith("data: {")]  # fmt: skip
    streamed = "".join(
        choice["delta"].get("content") or "" for event in events for choice in event["choices"]
    )
    assert streamed

    trace = stored_trace(keel, trace_id)
    assert trace["status"] == "ok"
    assert trace["output"] == streamed
    assert trace["input_tokens"] == whole["usage"]["prompt_tokens"]
    assert trace["output_tokens"] == count_tokens(streamed)
    assert 0 < trace["ttft_ms"] < trace["duration_ms"]
    root = trace["spans"][0]
    assert root["attributes"]["gen_ai.usage.output_tokens"] == trace["output_tokens"]
    assert root["attributes"]["gen_ai.provider.name"]
    assert root["attributes"]["keel.stream"] is True
    names = {child["name"] for child in root["children"]}
    assert {"keel.auth", "keel.route"} <= names
