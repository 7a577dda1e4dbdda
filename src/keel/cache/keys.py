"""Cache keys: the normalised request that determines an answer, hashed with its scope.

The exact key covers every field that can change the answer; fields that only change
delivery (stream, stream_options) or bookkeeping (user, metadata, store) are left out.
The semantic key splits a conversation into a context (system prompt, earlier turns,
parameters: hashed) and the last user turn (embedded).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from keel.cache.config import CacheConfig

# Fields that never change the answer, only how it is delivered or recorded.
IGNORED_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "prompt_cache_key"}
)
_KEY_VERSION = "1"  # bump when normalisation changes, so old entries stop matching


def _text_parts(content: Any) -> Any:
    """Content as a plain string when it is only text parts (both wire forms mean the same)."""
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    return content


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    normal = {k: v for k, v in message.items() if v is not None}
    if "content" in normal:
        normal["content"] = _text_parts(normal["content"])
    return normal


def normalise(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields that determine the answer, in a canonical form."""
    normal = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    if isinstance(normal.get("messages"), list):
        normal["messages"] = [_message(m) for m in normal["messages"]]
    return normal


def _digest(*parts: Any) -> str:
    data = orjson.dumps([_KEY_VERSION, *parts], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


def exact_key(project_id: str, route_identity: str, body: dict[str, Any]) -> str:
    """The entry id of an exact answer: project, route identity and the normalised body."""
    return _digest("exact", project_id, route_identity, normalise(body))[:32]


def cacheable(body: dict[str, Any], config: CacheConfig) -> bool:
    """Whether this request's answer may be stored and reused under `config`.

    By default only deterministic requests: temperature 0 or a fixed seed. A request
    without a temperature samples at the provider's default (1 for OpenAI), so it is not.
    """
    if not config.enabled or config.cacheable == "never":
        return False
    if config.cacheable == "always":
        return True
    temperature = body.get("temperature")
    return body.get("seed") is not None or (
        isinstance(temperature, int | float) and temperature == 0
    )


@dataclass(frozen=True, slots=True)
class SemanticKey:
    """The context every semantic neighbour must share, and the text that is embedded."""

    context: str  # hash of project, route identity, earlier turns and parameters
    text: str  # the last user turn


def semantic_key(project_id: str, route_identity: str, body: dict[str, Any]) -> SemanticKey | None:
    """None when the request has no last user turn of plain text to compare."""
    normal = normalise(body)
    messages = normal.pop("messages", None)
    if isinstance(messages, list):
        if not messages or not isinstance(messages[-1], dict):
            return None
        last = messages[-1]
        if last.get("role") != "user" or not isinstance(last.get("content"), str):
            return None
        earlier, text = messages[:-1], last["content"]
    elif isinstance(normal.get("prompt"), str):  # /v1/completions
        earlier, text = [], normal.pop("prompt")
    else:
        return None
    if not text.strip():
        return None
    return SemanticKey(_digest("context", project_id, route_identity, earlier, normal), text)


def bucket_key(context: str, embedding_model: str) -> str:
    """Where a vector is indexed: its context and the model that made it (vectors of two
    models are not comparable, so a model change starts an empty bucket)."""
    return _digest("bucket", context, embedding_model)[:32]
