"""The official openai SDK against a real Keel serving the real bundled models."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
from openai import NotFoundError, OpenAI

from tests.support.keel_process import KeelProcess

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def client(keel: KeelProcess) -> OpenAI:
    return OpenAI(base_url=f"{keel.base_url}/v1", api_key=keel.api_key, max_retries=0)


def test_first_start_printed_the_admin_key_once_and_saved_it_private(keel: KeelProcess) -> None:
    key_file = keel.data_dir / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert keel.log().count(keel.api_key) == 1


def test_chat_completion_from_smollm2(client: OpenAI) -> None:
    answer = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=24)
    text = answer.choices[0].message.content
    assert text
    assert text.strip()
    assert answer.model == "smollm2"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 24


def test_stream_concatenates_to_the_same_text_and_ends_with_usage(client: OpenAI) -> None:
    options = {"model": "smollm2", "messages": MESSAGES, "max_tokens": 24, "temperature": 0}
    whole = client.chat.completions.create(**options)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(
            **options,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Keel-Cache": "bypass"},  # from the model, not a cached replay
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.completion_tokens == whole.usage.completion_tokens


def test_text_completion(client: OpenAI) -> None:
    answer = client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=8
    )
    assert answer.choices[0].text.strip()
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0


def test_embeddings_rank_a_paraphrase_above_an_unrelated_sentence(client: OpenAI) -> None:
    result = client.embeddings.create(
        model="all-minilm-l6-v2",
        input=[
            "The cat sat on the mat.",
            "A cat was sitting on a rug.",
            "Quarterly revenue grew by eight percent.",
        ],
    )
    vectors = np.array([item.embedding for item in result.data])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    # The SDK asks for base64 by default and decodes it: same numbers as floats.
    floats = client.embeddings.create(
        model="all-minilm-l6-v2", input="The cat sat on the mat.", encoding_format="float"
    )
    assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-6)


def test_readyz_says_what_runs_the_embedding_model(keel: KeelProcess) -> None:
    import httpx

    check = httpx.get(f"{keel.base_url}/readyz").json()["checks"]["embeddings:all-minilm-l6-v2"]
    assert check == {"ready": True, "state": "ready", "runtime": "onnxruntime"}


def test_unknown_model_is_a_404_listing_the_known_ones(client: OpenAI) -> None:
    with pytest.raises(NotFoundError, match="smollm2"):
        client.chat.completions.create(model="gpt-5", messages=MESSAGES)


def test_models_are_listed(client: OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {"smollm2", "all-minilm-l6-v2"}


def test_json_object_response_format_yields_json(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Give me a JSON object with keys name and age "
                   "for a person named Ann aged 30."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=200,
    )  # fmt: skip
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
