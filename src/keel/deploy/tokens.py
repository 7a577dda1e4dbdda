"""Exact token counts for a GGUF model, for streams whose server reports no usage.

llama-cpp-python's server does not honour stream_options.include_usage, so Keel renders
the prompt with the model's own chat template and counts with its own vocabulary
(loaded vocab-only: a few MB, no weights), in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from keel.providers.base import Operation, Usage


class GGUFTokenCounter:
    def __init__(self, model_path: Path):
        self._model_path = model_path
        self._lock = threading.Lock()
        self._llama: Any = None
        self._formatter: Any = None

    def _load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = Llama(model_path=str(self._model_path), vocab_only=True, verbose=False)
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "replace")
            bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "replace")
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._llama = llama

    def _count_sync(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        with self._lock:
            if self._llama is None:
                self._load()
            llama = self._llama
            if op == "chat/completions" and self._formatter is not None:
                result = self._formatter(messages=payload.get("messages", []))
                prompt_tokens = llama.tokenize(
                    result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
                )
            else:
                prompt = payload.get("prompt", "")
                text = prompt if isinstance(prompt, str) else "".join(prompt)
                prompt_tokens = llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            completion_tokens = (
                llama.tokenize(output_text.encode("utf-8"), add_bos=False, special=False)
                if output_text
                else []
            )
        return Usage(len(prompt_tokens), len(completion_tokens))

    async def count(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        return await asyncio.to_thread(self._count_sync, op, payload, output_text)
