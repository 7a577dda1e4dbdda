"""The injection classifier's weights: a versioned artifact with its model card.

Two logistic-regression heads share the n-gram idf table (character and word n-grams):
`full` reads n-grams, scanner
signals and the MiniLM embedding; `fast` reads only the first two and decides alone when
it is sure a text is benign (see `InjectionScanner`). The card (JSON beside the weights)
records the data hashes, features, threshold and measured accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.guard.features import EXTRA_NAMES, NGRAM_FEATURES, SparseRow

DEFAULT_VERSION = "injection-v2"
EMBEDDING_DIM = 384

FloatArray = npt.NDArray[np.float32]


class ModelArtifactError(RuntimeError):
    """The weights or card are missing or do not match this code."""


@dataclass(frozen=True, slots=True)
class LinearHead:
    """Logistic regression over [n-grams | extra signals | embedding (full head only)]."""

    w_ngram: FloatArray
    w_extra: FloatArray
    bias: float
    w_emb: FloatArray | None = None

    def logits(self, ngram_rows: Sequence[SparseRow] | Any, extra: FloatArray) -> FloatArray:
        """One logit per view: `ngram_rows` holds the views' tf-idf n-grams (`tfidf_rows`,
        or a sparse views x NGRAM_FEATURES matrix) and `extra` has one row per view."""
        if isinstance(ngram_rows, Sequence):
            dots = [row.dot(self.w_ngram) for row in ngram_rows]
            base = np.asarray(dots, dtype=np.float32).reshape(len(dots))
        else:
            base = np.asarray(ngram_rows @ self.w_ngram, dtype=np.float32).ravel()
        return (base + extra @ self.w_extra + np.float32(self.bias)).astype(np.float32)

    def logits_windows(
        self,
        ngram_rows: Sequence[SparseRow] | Any,
        extra: FloatArray,
        emb: FloatArray,
        emb_view: list[int],
    ) -> FloatArray:
        """One logit per embedding window; `emb_view[i]` is the view window i came from."""
        if self.w_emb is None:
            raise ModelArtifactError("this head has no embedding weights")
        base = self.logits(ngram_rows, extra)
        out: FloatArray = (base[np.asarray(emb_view)] + emb @ self.w_emb).astype(np.float32)
        return out


def sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = (1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))).astype(np.float32)
    return out


@dataclass(frozen=True, slots=True)
class InjectionModel:
    version: str
    idf: FloatArray
    full: LinearHead
    fast: LinearHead
    threshold: float
    fast_skip_below: float
    embedding: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None, version: str = DEFAULT_VERSION) -> InjectionModel:
        """Load `<version>.npz` and `<version>.json` from `path` (default: shipped)."""
        if path is None:
            folder = resources.files("keel.guard") / "models"
            weights_file: Any = folder / f"{version}.npz"
            card_file: Any = folder / f"{version}.json"
        else:
            weights_file = path / f"{version}.npz"
            card_file = path / f"{version}.json"
        if not weights_file.is_file() or not card_file.is_file():
            raise ModelArtifactError(
                f"injection model {version!r} not found at {weights_file}; "
                "train it with: python -m training.guard.train"
            )
        card = json.loads(card_file.read_text(encoding="utf-8"))
        with weights_file.open("rb") as fh, np.load(fh) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float32) for k in data.files}
        if arrays["idf"].shape != (NGRAM_FEATURES,) or tuple(card["features"]["extra"]) != (
            EXTRA_NAMES
        ):
            raise ModelArtifactError(
                f"injection model {version!r} was trained with other features than this "
                "code builds; retrain it with: python -m training.guard.train"
            )
        return cls(
            version=version,
            idf=arrays["idf"],
            full=LinearHead(
                w_ngram=arrays["full_ngram"],
                w_extra=arrays["full_extra"],
                bias=float(arrays["full_bias"][0]),
                w_emb=arrays["full_emb"],
            ),
            fast=LinearHead(
                w_ngram=arrays["fast_ngram"],
                w_extra=arrays["fast_extra"],
                bias=float(arrays["fast_bias"][0]),
            ),
            threshold=float(card["threshold"]),
            fast_skip_below=float(card["fast_path"]["skip_embedding_below"]),
            embedding=dict(card["features"]["embedding"]),
            card=card,
        )

    def save(self, folder: Path) -> tuple[Path, Path]:
        """Write `<version>.npz` (float16 n-gram tables, compressed) and `<version>.json`."""
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / f"{self.version}.npz"
        assert self.full.w_emb is not None
        # float16 keeps the artifact small; the n-gram weights need no more precision.
        np.savez_compressed(
            weights,
            idf=self.idf.astype(np.float16),
            full_ngram=self.full.w_ngram.astype(np.float16),
            full_extra=self.full.w_extra,
            full_emb=self.full.w_emb,
            full_bias=np.asarray([self.full.bias], dtype=np.float32),
            fast_ngram=self.fast.w_ngram.astype(np.float16),
            fast_extra=self.fast.w_extra,
            fast_bias=np.asarray([self.fast.bias], dtype=np.float32),
        )
        card = folder / f"{self.version}.json"
        card.write_text(json.dumps(self.card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return weights, card
