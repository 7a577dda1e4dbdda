"""The adapter merged into a GGUF is the same model in llama.cpp as in PyTorch with the
adapter: next-token logits agree (cosine >= 0.99) on 5 prompts, and differ from the base."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keel.finetune.export import merge_to_gguf
from keel.finetune.trainer import TARGET_MODULES, load_base

PROMPTS = [
    "The capital of France is",
    "Read the review and answer with JSON only.\nReview: The kettle is great.",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colours are",
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def merged(base_gguf: Path, base_cache: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A LoRA with random B (peft starts it at zero) merged into a GGUF, and the PyTorch
    model with that adapter."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    torch.manual_seed(0)
    _, model = load_base(base_gguf, base_cache)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=list(TARGET_MODULES))
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    out = tmp_path_factory.mktemp("merged") / "model.gguf"
    report = merge_to_gguf(base_gguf, get_peft_model_state_dict(model), 8, 16, out)
    model.eval()
    return out, model, report


def test_the_merged_gguf_gives_pytorchs_next_token_logits(merged, base_gguf: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from llama_cpp import Llama

    path, model, report = merged
    assert report["merged_tensors"] == 30 * len(TARGET_MODULES)
    served = Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    base = Llama(model_path=str(base_gguf), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    for prompt in PROMPTS:
        ids = served.tokenize(prompt.encode(), add_bos=False)
        served.reset()
        served.eval(ids)
        tuned_cpp = np.array(served.scores[served.n_tokens - 1], dtype=np.float64)
        base.reset()
        base.eval(ids)
        base_cpp = np.array(base.scores[base.n_tokens - 1], dtype=np.float64)
        with torch.no_grad():
            torch_logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy()
        assert cosine(tuned_cpp, torch_logits) >= 0.99, prompt
        # The check has teeth: the base alone is measurably further from the tuned model.
        assert cosine(base_cpp, torch_logits) < cosine(tuned_cpp, torch_logits), prompt
