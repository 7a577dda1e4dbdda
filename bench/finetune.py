"""The acceptance run of LoRA fine-tuning on this machine: the generated JSON-review task
(training/finetune/generate.py), trained on the bundled SmolLM2-135M, merged into a GGUF,
and the tuned model compared with its base on the held-out split by llama.cpp.

    python bench/finetune.py --train 300 --test 100 --threads 2

Prints JSON: training wall time, tokens/s, peak RSS, validation loss before and after, the
merge's time and file size beside the adapter's, the time a cancel waits (one step at
most: the p50 and max step time), and the held-out accuracy of base and tuned with the
exact McNemar p-value of the paired difference.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from keel.deploy.bundled import smollm2_gguf
from keel.finetune.compare import json_match, paired
from keel.finetune.data import Example, parse_examples, split
from keel.finetune.export import merge_to_gguf
from keel.finetune.trainer import Callbacks, Hyper, StepReport, train
from training.finetune.generate import generate


def _examples(rows: list[dict[str, Any]]) -> list[Example]:
    return parse_examples("".join(json.dumps(r) + "\n" for r in rows).encode())


def _answers(model: Path, examples: list[Example], threads: int) -> list[str]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=512, n_threads=threads, verbose=False)
    out = []
    for example in examples:
        result = llm.create_chat_completion(
            messages=list(example.messages[:-1]),
            temperature=0.0,
            max_tokens=48,  # type: ignore[arg-type]
        )
        out.append(str(result["choices"][0]["message"]["content"] or ""))  # type: ignore[index]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr-multiplier", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="Converted-base cache folder")
    args = parser.parse_args()

    base = smollm2_gguf()
    train_rows, test_rows = generate(args.train, args.test, seed=7)
    train_set, valid_set = split(_examples(train_rows), 0.1, seed=42)
    test_set = _examples(test_rows)
    hyper = Hyper(
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        threads=args.threads,
        learning_rate_multiplier=args.lr_multiplier,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="keel-ft-"))
    steps: list[tuple[float, StepReport]] = []

    def on_step(report: StepReport) -> None:
        steps.append((time.monotonic(), report))
        print(
            f"step {report.step}/{report.total_steps} loss {report.train_loss:.3f} "
            f"{report.tokens_per_second:.1f} tok/s",
            file=sys.stderr,
            flush=True,
        )

    started = time.monotonic()
    result = train(
        base,
        train_set,
        valid_set,
        hyper,
        workdir,
        Callbacks(on_step=on_step),
        cache=args.cache,
    )
    wall = time.monotonic() - started
    step_times = [b[0] - a[0] for a, b in itertools.pairwise(steps)]

    import torch

    weights = torch.load(result.adapter_dir / "adapter.pt", weights_only=True)
    merge_started = time.monotonic()
    merged = merge_to_gguf(base, weights, hyper.lora_r, hyper.lora_alpha, workdir / "model.gguf")
    merge_seconds = time.monotonic() - merge_started
    adapter_bytes = sum(t.numel() * 4 for t in weights.values())  # as an F32 GGUF adapter

    eval_started = time.monotonic()
    references = [e.messages[-1]["content"] for e in test_set]
    base_scores = [
        json_match(a, r)
        for a, r in zip(_answers(base, test_set, args.threads), references, strict=True)
    ]
    tuned_answers = _answers(workdir / "model.gguf", test_set, args.threads)
    tuned_scores = [json_match(a, r) for a, r in zip(tuned_answers, references, strict=True)]
    comparison = paired(base_scores, tuned_scores, min_margin=0.1, alpha=0.05)
    print(
        json.dumps(
            {
                "examples": {
                    "train": len(train_set),
                    "validation": len(valid_set),
                    "test": len(test_set),
                },
                "hyper": {
                    "epochs": hyper.n_epochs,
                    "batch_size": hyper.batch_size,
                    "lora_r": hyper.lora_r,
                    "threads": hyper.threads,
                    "learning_rate": hyper.learning_rate,
                },
                "training": {
                    **result.metrics(),
                    "wall_seconds": round(wall, 1),
                    "step_seconds_p50": round(statistics.median(step_times), 2)
                    if step_times
                    else None,
                    "step_seconds_max": round(max(step_times), 2) if step_times else None,
                },
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "merge": {
                    **merged,
                    "seconds": round(merge_seconds, 1),
                    "base_bytes": base.stat().st_size,
                    "adapter_f32_bytes": adapter_bytes,
                },
                "held_out": {
                    **comparison.as_dict(),
                    "eval_seconds": round(time.monotonic() - eval_started, 1),
                    "tuned_sample": tuned_answers[:3],
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
