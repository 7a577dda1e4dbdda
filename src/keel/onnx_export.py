"""One ONNX export at a time in a process.

torch.onnx's TorchScript exporter keeps global state (`GLOBALS.in_onnx_export`): two
exports on two threads at once fail ("GLOBALS.in_onnx_export must be False"), and the
loser falls back to PyTorch. `keel serve` exports the embedding model and the PII tagger
while it starts, on different threads; both hold this lock around `torch.onnx.export`.
"""

from __future__ import annotations

import threading

EXPORT_LOCK = threading.Lock()
