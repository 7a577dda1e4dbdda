"""Embeddings: admit, pick the embedding model, embed, answer in OpenAI's shape.

An embeddings call skips the chat steps (prompt, guard, cache, route): it is admitted
(scopes, rate limits) and recorded like any other call.
"""

from __future__ import annotations

import base64
from typing import Any

from keel.calls import Call, CallState
from keel.errors import InvalidRequest
from keel.limits.admission import Admission
from keel.providers.base import Usage
from keel.registry.catalog import ModelCatalog
from keel.routing.router import Router


class Embed:
    def __init__(self, catalog: ModelCatalog, router: Router, admission: Admission | None,
                 max_inputs: int) -> None:  # fmt: skip
        self.catalog, self.router, self.admission = catalog, router, admission
        self.max_inputs = max_inputs

    async def run(self, call: Call, state: CallState) -> dict[str, Any]:
        body, principal = call.body, call.principal
        model = str(body["model"])
        state.body = {"model": model, "input": body["input"]}  # what the trace keeps
        if self.admission is not None:
            await self.admission.admit_embeddings(principal, model)
        chat_models = self.router.table.names(principal.project_id)
        embedder = self.catalog.resolve_embedder(model, chat_models)
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        if len(texts) > self.max_inputs:
            raise InvalidRequest(
                f"{len(texts)} inputs in one request; at most {self.max_inputs} are accepted "
                "(split the batch, or raise embedding_max_inputs)",
                param="input",
            )
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != embedder.dimension:
            raise InvalidRequest(
                f"model {embedder.name!r} returns {embedder.dimension} dimensions; "
                f"omit 'dimensions' or set it to {embedder.dimension}",
                param="dimensions",
            )
        span = state.begin("embed")
        result = await embedder.embed(texts)
        state.end(span)
        state.route, state.attempts, state.embedding_model = model, 1, embedder.name
        state.usage = Usage(result.prompt_tokens, 0)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": index, "embedding": _encoded(vector, as_base64)}
            for index, vector in enumerate(result.vectors)
        ]
        tokens = result.prompt_tokens
        return {"object": "list", "data": data, "model": embedder.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


def _encoded(vector: Any, as_base64: bool) -> Any:
    if as_base64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
