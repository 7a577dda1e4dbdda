"""The sentence encoder's forward pass on ONNX Runtime: the same vectors, several times sooner.

A short query through PyTorch spends most of its time in per-operator overhead, not in
arithmetic. ONNX Runtime runs the same graph (exported once per process from the loaded
model, in memory, with its mean pooling and L2 normalisation) as one fused call. The
export is checked against PyTorch at load: a model whose vectors differ is not used.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.onnx_export import EXPORT_LOCK

log = logging.getLogger("keel.embeddings")

MIN_COSINE = 0.99999  # to PyTorch's vectors, on the calibration texts
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxEncoder:
    """Token ids in, unit vectors out. `run` is safe to call from several threads."""

    def __init__(self, session: Any, inputs: tuple[str, ...]):
        self._session = session
        self._inputs = inputs

    def run(self, features: dict[str, Any]) -> npt.NDArray[np.float32]:
        feed = {name: np.asarray(features[name], dtype=np.int64) for name in self._inputs}
        vectors: npt.NDArray[np.float32] = self._session.run(None, feed)[0]
        return vectors


def _exportable(model: Any) -> bool:
    """True where the model is a plain transformer, mean pooling and (optionally) L2
    normalisation: the shape the export reproduces. Anything else stays on PyTorch."""
    names = [type(module).__name__ for module in model]
    if names[:2] != ["Transformer", "Pooling"] or names[2:] not in ([], ["Normalize"]):
        return False
    config = model[1].get_config_dict()
    return bool(config.get("pooling_mode") == "mean" and config.get("include_prompt", True))


def _graph(model: Any, inputs: tuple[str, ...]) -> bytes:
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module):
            super().__init__()
            self.transformer = transformer

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            given = dict(zip(inputs, tensors, strict=True))
            hidden = self.transformer(**given).last_hidden_state
            mask = given["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    # Traced on a padded batch, so the graph keeps the attention mask's path.
    sample = model.tokenizer(["a sample", "a longer sample"], padding=True, return_tensors="pt")
    axes = {name: {0: "texts", 1: "tokens"} for name in inputs}
    with tempfile.TemporaryDirectory(prefix="keel-onnx-") as folder:
        path = Path(folder) / "encoder.onnx"
        with warnings.catch_warnings():  # the tracer's notes on shape checks, not the user's
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Encoder(model[0].auto_model).eval(),
                tuple(sample[name] for name in inputs),
                path,
                input_names=list(inputs),
                output_names=["vectors"],
                dynamic_axes=axes | {"vectors": {0: "texts"}},
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: no onnxscript, a second or two
            )
        return path.read_bytes()


_SESSIONS: dict[tuple[Path, tuple[str, ...], int | None], Any] = {}


def onnx_encoder(model: Any, model_dir: Path, threads: int | None) -> OnnxEncoder | None:
    """An encoder for `model` (a loaded SentenceTransformer), or None where its shape or
    the installed packages do not allow one (the caller keeps PyTorch; the log says why).
    `threads`: ONNX Runtime's threads per call (None: one per core). Embedders of one
    model in one process share one export and one session (its `run` is thread-safe)."""
    try:
        import onnxruntime  # noqa: F401  (only whether it is installed)
    except ImportError as exc:
        log.warning("embeddings stay on PyTorch: onnxruntime is not installed (%s)", exc)
        return None
    if not _exportable(model):
        log.info("embeddings stay on PyTorch: the model is not transformer + mean pooling")
        return None
    inputs = _input_names(model)
    key = (model_dir, inputs, threads)
    with EXPORT_LOCK:  # also guards _SESSIONS
        if key not in _SESSIONS:
            _SESSIONS[key] = _session(_graph(model, inputs), threads)
        return OnnxEncoder(_SESSIONS[key], inputs)


def _input_names(model: Any) -> tuple[str, ...]:
    return tuple(n for n in INPUTS if n in model.tokenizer.model_input_names)


def _session(graph: bytes | str, threads: int | None) -> Any:
    """An ONNX Runtime session of `graph` (the bytes, or a file's path) on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: on 2 cores a spinning pool takes the CPU the
    # event loop and the model server need between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def export_graph(model: Any, path: Path) -> tuple[str, ...]:
    """Write `model`'s graph to `path` for another process; its input names are returned."""
    inputs = _input_names(model)
    with EXPORT_LOCK:
        path.write_bytes(_graph(model, inputs))
    return inputs


class StandaloneEncoder:
    """Texts in, unit vectors out, with the model's own Rust tokenizer and ONNX Runtime
    only: no PyTorch, so a process that embeds with it holds about a quarter of the memory
    (the background child of docs/insights.md)."""

    def __init__(
        self,
        graph: Path,
        tokenizer: str,
        max_tokens: int,
        inputs: tuple[str, ...],
        dimension: int,
        batch: int,
        threads: int | None,
    ):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(tokenizer)
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.enable_padding(pad_id=self._tokenizer.token_to_id("[PAD]") or 0)
        self._encoder = OnnxEncoder(_session(str(graph), threads), inputs)
        self._dimension = dimension
        self._batch = batch

    def embed(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], int]:
        """Vectors in the order of `texts` (batched by length), and the tokens read."""
        vectors = np.empty((len(texts), self._dimension), dtype=np.float32)
        tokens = 0
        for rows in by_length(texts, self._batch):
            encodings = self._tokenizer.encode_batch([texts[i] for i in rows])
            features = {
                "input_ids": [e.ids for e in encodings],
                "attention_mask": [e.attention_mask for e in encodings],
                "token_type_ids": [e.type_ids for e in encodings],
            }
            tokens += sum(sum(e.attention_mask) for e in encodings)
            vectors[rows] = self._encoder.run(features)
        return vectors, tokens


def by_length(texts: list[str], size: int) -> Iterator[list[int]]:
    """Batches of at most `size` indices into `texts`, shortest texts first: a batch pads to
    little more than its own texts."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]
