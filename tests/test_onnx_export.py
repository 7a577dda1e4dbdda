"""The embedding model and the PII tagger, loaded at once on two threads as `keel serve`
does, both end on ONNX Runtime: each export holds the process's export lock, so the
exporter's global state never sees two at a time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from keel.deploy.bundled import minilm_dir
from keel.embeddings import onnx as embeddings_onnx
from keel.embeddings.local import LocalEmbedder
from keel.guard.pii_tagger import NameTagger
from keel.onnx_export import EXPORT_LOCK


def test_two_models_exported_at_once_both_run_on_onnx_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    real = torch.onnx.export
    held: list[bool] = []

    def export(*args: Any, **kwargs: Any) -> Any:
        held.append(EXPORT_LOCK.locked())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    monkeypatch.setattr(embeddings_onnx, "_SESSIONS", {})  # export again, not reuse
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    tagger = NameTagger()
    threads = [threading.Thread(target=embedder._load_sync), threading.Thread(target=tagger.load)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert held == [True, True]
    assert (embedder.runtime, tagger.runtime) == ("onnxruntime", "onnx")
