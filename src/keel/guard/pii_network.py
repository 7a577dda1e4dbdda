"""The PII tagger's network: its torch module, the LoRA merge, and its forward pass on
PyTorch or ONNX Runtime (exported and quantised to int8 in memory, once per load).

`pii_tagger` reads text into windows and decodes what this returns; training
(`training/pii/`) builds the same module and keeps what `trainable_state` returns.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from keel.onnx_export import EXPORT_LOCK

if TYPE_CHECKING:
    import torch

TAGGED = ("PERSON", "STREET_ADDRESS", "ORGANIZATION")
LABELS = ("O", *(f"{p}-{e}" for e in TAGGED for p in ("B", "I")))
N_CASES = 12  # casing classes of a word piece (see pii_tagger.case_class)
LORA_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
INPUTS = ("ids", "cases", "mask")

# The network's input: word-piece ids, casing classes and attention mask of each window.
Inputs = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]
# Its forward pass: label probabilities of each piece of each window.
Forward = Callable[
    [npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]], npt.NDArray[np.float32]
]


def build_network(encoder: Any, layers: int, rank: int) -> Any:
    """The tagger as a torch module around a transformers BertModel (its first `layers`)."""
    import torch
    from torch import nn

    class LoraLinear(nn.Module):
        def __init__(self, base: nn.Linear, rank: int) -> None:
            super().__init__()
            self.base = base
            self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) * 0.01)
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
            self.scale = 2.0  # alpha / rank, alpha = 2 * rank

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale
            return out

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            encoder.encoder.layer = encoder.encoder.layer[:layers]
            encoder.config.num_hidden_layers = layers
            self.encoder = encoder
            self.case = nn.Embedding(N_CASES, encoder.config.hidden_size)
            nn.init.zeros_(self.case.weight)
            self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))
            self.rank = rank

        def add_lora(self) -> None:
            for layer in self.encoder.encoder.layer:
                for path in LORA_TARGETS:
                    parent = layer.get_submodule(path.rsplit(".", 1)[0])
                    name = path.rsplit(".", 1)[1]
                    setattr(parent, name, LoraLinear(getattr(parent, name), self.rank))

        def forward(
            self, ids: torch.Tensor, cases: torch.Tensor, mask: torch.Tensor
        ) -> torch.Tensor:
            embeds = self.encoder.embeddings.word_embeddings(ids) + self.case(cases)
            hidden = self.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            logits: torch.Tensor = self.head(hidden)
            return logits

    return Tagger()


def torch_forward(net: Any, quantize: bool) -> Forward:
    """The float network on PyTorch, its linear layers quantised to int8 if `quantize`."""
    import torch

    if quantize:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager quantization is deprecated, works
            net = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                net, {torch.nn.Linear}, dtype=torch.qint8
            )

    def forward(
        ids: npt.NDArray[np.int64], cases: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        tensors = (torch.from_numpy(a) for a in (ids, cases, mask))
        with torch.inference_mode():
            probs: npt.NDArray[np.float32] = torch.softmax(net(*tensors), dim=-1).numpy()
        return probs

    return forward


class _QuantiserNotes(logging.Filter):
    """Drops the ONNX quantiser's notes (dozens of INFO lines, one per tensor, logged on the
    root logger) while the tagger loads; its warnings and errors, and every other module's
    records, pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        quantiser = f"onnxruntime{os.sep}quantization" in record.pathname
        return not (quantiser and record.levelno <= logging.INFO)


def onnx_forward(net: Any, quantize: bool, threads: int) -> Forward:
    """The float network exported to ONNX (in memory) and run by ONNX Runtime, its matrix
    products quantised to int8 if `quantize`. Raises where the export or the runtime fails."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    class Probs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(*inputs), dim=-1)

    # Traced on two windows, the second padded, so the graph keeps the attention mask's path.
    sample = torch.ones((2, 8), dtype=torch.long)
    mask = sample.clone()
    mask[1, 5:] = 0
    axes = {name: {0: "windows", 1: "pieces"} for name in (*INPUTS, "probs")}
    with tempfile.TemporaryDirectory(prefix="keel-pii-onnx-") as folder:
        path = Path(folder) / "tagger.onnx"
        with warnings.catch_warnings(), torch.no_grad(), EXPORT_LOCK:
            warnings.simplefilter("ignore")  # the tracer's notes on shape checks
            # In eval mode, or the exporter leaves the network in training mode (dropout on).
            torch.onnx.export(
                Probs().eval(),
                (sample, sample, mask),
                path,
                input_names=list(INPUTS),
                output_names=["probs"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: no onnxscript, a second or two
            )
        if quantize:
            quiet = _QuantiserNotes()
            logging.getLogger().addFilter(quiet)
            try:
                # Shape inference first, which the quantiser wants (it warns otherwise).
                quant_pre_process(path, path, skip_optimization=True, skip_symbolic_shape=True)
                quantize_dynamic(path, path, weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().removeFilter(quiet)
        graph = path.read_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: on 2 cores a spinning pool takes the CPU
    # the event loop and the other scanners need between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def forward(
        ids: npt.NDArray[np.int64], cases: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        feed = {"ids": ids, "cases": cases, "mask": mask}
        probs: npt.NDArray[np.float32] = session.run(None, feed)[0]
        return probs

    return forward


def trainable_state(net: Any) -> dict[str, npt.NDArray[np.float32]]:
    """What the artifact keeps: LoRA factors, layer norms, the casing table and the head."""
    keep = {}
    for name, param in net.named_parameters():
        if param.requires_grad:
            keep[name] = param.detach().cpu().numpy().astype(np.float32)
    return keep


def merge_lora(net: Any) -> None:
    """Fold each LoRA pair into its base weight, so inference is a plain linear layer."""
    import torch

    for layer in net.encoder.encoder.layer:
        for path in LORA_TARGETS:
            parent_path, name = path.rsplit(".", 1)
            parent = layer.get_submodule(parent_path)
            lora = getattr(parent, name)
            base = lora.base
            with torch.no_grad():
                base.weight += (lora.lora_b @ lora.lora_a) * lora.scale
            setattr(parent, name, base)
