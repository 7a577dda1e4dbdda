"""The gateway step that turns a prompt reference into messages (step 2 of the request path).

Prompts come from an in-process cache (labels per prompt, compiled templates per
version); change events drop stale entries, and misses load in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from keel.calls import PromptUsed
from keel.errors import InvalidRequest, NotFound
from keel.events import Change, ChangeBus
from keel.prompts.render import CompiledPrompt
from keel.prompts.service import TOPIC, Pointers, PromptService, label_not_found
from keel.prompts.spec import (
    DEFAULT_LABEL,
    LATEST,
    MAX_VERSION,
    PROMPT_MODEL_PREFIX,
    valid_label,
    valid_name,
)

# Request fields a version's config supplies when the request leaves them out.
CONFIG_FIELDS = ("temperature", "max_tokens", "response_format", "stop")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A bounded mapping; the least recently used entry goes first."""

    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def drop(self, match: Callable[[K], bool]) -> None:
        for key in [k for k in self._items if match(k)]:
            del self._items[key]


@dataclass(frozen=True)
class PromptReference:
    name: str
    label: str | None
    version: int | None
    variables: dict[str, Any]
    param: str  # where the reference came from, for error messages
    model_given: bool  # the request named a real model (not prompt:…)


def parse_model_reference(model: str) -> tuple[str, str | None, int | None]:
    """`prompt:NAME`, `prompt:NAME@LABEL` or `prompt:NAME@VERSION` → (name, label, version)."""
    name, _, pointer = model.removeprefix(PROMPT_MODEL_PREFIX).partition("@")
    if not valid_name(name) or (_ and not pointer):
        raise InvalidRequest(
            f"invalid prompt reference {model[:120]!r}; write prompt:NAME, prompt:NAME@LABEL "
            "or prompt:NAME@VERSION",
            param="model",
        )
    if not pointer:
        return name, None, None
    if pointer.isdigit():
        version = int(pointer)
        if not 1 <= version <= MAX_VERSION:
            raise InvalidRequest(f"invalid prompt version {pointer}", param="model")
        return name, None, version
    if not valid_label(pointer):
        raise InvalidRequest(f"invalid prompt label {pointer[:80]!r} in model", param="model")
    return name, pointer, None


def reference(body: dict[str, Any]) -> PromptReference | None:
    """The prompt a request asks for, from `prompt` or a `prompt:` model; None if none."""
    field = body.get("prompt")
    model = body.get("model")
    by_model = isinstance(model, str) and model.startswith(PROMPT_MODEL_PREFIX)
    if field is None and not by_model:
        return None
    if field is not None:
        if by_model:
            raise InvalidRequest(
                "send the prompt either as 'prompt' or as model 'prompt:…', not both",
                param="model",
            )
        if body.get("prompt_variables") is not None:
            raise InvalidRequest(
                "with 'prompt', send variables as prompt.variables, not prompt_variables",
                param="prompt_variables",
            )
        name, label, version = field["name"], field.get("label"), field.get("version")
        if not valid_name(name):
            raise InvalidRequest(f"invalid prompt name {name[:120]!r}", param="prompt.name")
        if label is not None and not valid_label(label):
            raise InvalidRequest(f"invalid prompt label {label[:80]!r}", param="prompt.label")
        variables = field.get("variables") or {}
        return PromptReference(
            name, label, version, variables, "prompt.variables", model is not None
        )
    name, label, version = parse_model_reference(str(model))
    variables = body.get("prompt_variables") or {}
    return PromptReference(name, label, version, variables, "prompt_variables", False)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A request whose prompt reference was rendered: the new body, and which prompt it used."""

    body: dict[str, Any]
    prompt: PromptUsed


class PromptResolver:
    """Step 2: render the referenced prompt version into the request's messages."""

    def __init__(self, service: PromptService, events: ChangeBus, *, cache_size: int = 4096):
        self._service = service
        self._lock = threading.Lock()  # change events arrive on worker threads
        self._pointers: _LRU[tuple[str, str], Pointers] = _LRU(cache_size)
        self._compiled: _LRU[tuple[str, str, int], CompiledPrompt] = _LRU(cache_size)
        self._generation = 0
        events.subscribe(TOPIC, self._on_change)

    def _on_change(self, change: Change) -> None:
        key = (change.project_id, change.key)
        with self._lock:
            self._generation += 1
            # "*": changes may have been missed (a lost Redis connection); forget them all.
            self._pointers.drop(lambda k: change.key == "*" or k == key)

    async def __call__(self, project: str, body: dict[str, Any]) -> Resolved | None:
        """The chat request `body` with its prompt rendered in; None when it names none.

        (/v1/completions has a `prompt` of its own, plain text: never call this for it.)
        """
        ref = reference(body)
        if ref is None:
            return None
        request_body = body
        version = await self._version(project, ref)
        compiled = await self._template(project, ref.name, version)
        messages = compiled.render(ref.variables, param=ref.param)

        body = {k: v for k, v in request_body.items() if k not in ("prompt", "prompt_variables")}
        body["messages"] = [*messages, *(request_body.get("messages") or [])]
        config = compiled.content.config.request_fields()
        if not ref.model_given:
            if "model" not in config:
                raise InvalidRequest(
                    f"no model to call: the request names none and version {version} of prompt "
                    f"{ref.name!r} sets none; send 'model', or set config.model in the prompt",
                    param="model",
                )
            body["model"] = config["model"]
        for name in CONFIG_FIELDS:
            if name in config and body.get(name) is None:
                body[name] = config[name]
        return Resolved(body, PromptUsed(ref.name, version))

    async def _version(self, project: str, ref: PromptReference) -> int:
        key = (project, ref.name)
        with self._lock:
            pointers, generation = self._pointers.get(key), self._generation
        if pointers is None:
            pointers = await asyncio.to_thread(self._service.pointers, project, ref.name)
            pointers = pointers or Pointers()  # remembered too: creation sends a change
            with self._lock:
                # A change that landed while we read may be newer than what we read.
                if generation == self._generation:
                    self._pointers.put(key, pointers)
        if not pointers.labels:
            raise NotFound(
                f"no prompt named {ref.name!r} in this project; list them with 'keel prompts list'",
                param="prompt",
                code="prompt_not_found",
            )
        if pointers.archived:
            raise NotFound(
                f"prompt {ref.name!r} is archived; push a new version to use it again",
                param="prompt",
                code="prompt_not_found",
            )
        if ref.version is not None:
            if ref.version > pointers.labels.get(LATEST, 0):
                raise NotFound(
                    f"prompt {ref.name!r} has no version {ref.version} "
                    f"(latest is {pointers.labels.get(LATEST)})",
                    param="prompt",
                    code="version_not_found",
                )
            return ref.version
        label = ref.label or DEFAULT_LABEL
        version = pointers.labels.get(label)
        if version is None:
            error = label_not_found(ref.name, label, pointers.labels)
            error.param = "prompt"
            raise error
        return version

    async def _template(self, project: str, name: str, version: int) -> CompiledPrompt:
        # Versions never change, so compiled templates need no invalidation.
        key = (project, name, version)
        with self._lock:
            compiled = self._compiled.get(key)
        if compiled is None:
            compiled = await asyncio.to_thread(self._service.compiled, project, name, version)
            if compiled is None:
                raise NotFound(
                    f"prompt {name!r} has no version {version}",
                    param="prompt",
                    code="version_not_found",
                )
            with self._lock:
                self._compiled.put(key, compiled)
        return compiled
