"""The acceptance run of LoRA fine-tuning on this machine: the generated JSON-review task
(training/finetune/generate.py), trained on the bundled SmolLM2-135M, merged into a GGUF,
and the tuned model compared with its base on the held-out split by llama.cpp.

    python bench/finetune.py --train 300 --test 100 --threads 2 --cache DIR
    python bench/finetune.py --cancel-after 2 --train 60
    python bench/finetune.py --speed 2 --train 48 --test 0 --cache DIR

The first form prints JSON: training wall time, tokens/s, peak RSS, validation loss before
and after, the merge's time and file size beside the adapter's, the time a cancel waits (one
step at most: the p50 and max step time), and the held-out accuracy of base and tuned with
the paired difference and gate from the evaluation module (bootstrap interval, exact sign
test). With --cancel-after N, a job goes through the fine-tuning service and executor as
`keel serve` runs it; it is cancelled as it reports step N (mid-step, while the next
one trains), and the JSON gives the seconds from the cancel to the job's terminal state and
the model versions registered after it (the base alone). With --speed N, training-step
variants (LoRA on all seven projections or on q and v, on every layer or the top ones,
batches of 8 or 16, and bf16 autocast where the CPU has bf16 hardware or --bf16 asks)
run interleaved for N rounds on the same batches, and the JSON gives each one's tokens/s.
The epochs default to n_epochs "auto", as a job's; the JSON carries the load average.
"""

from __future__ import annotations

import argparse
import json
import os
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
from keel.evals.scorers.text import json_equal
from keel.finetune.compare import judge
from keel.finetune.data import Example, auto_epochs, parse_examples, split
from keel.finetune.export import merge_to_gguf
from keel.finetune.trainer import Callbacks, Hyper, StepReport, native_bf16, train
from training.finetune.generate import generate


def _examples(rows: list[dict[str, Any]]) -> list[Example]:
    return parse_examples("".join(json.dumps(r) + "\n" for r in rows).encode())


def _answers(model: Path, examples: list[Example], threads: int) -> list[str]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=512, n_threads=threads, verbose=False)
    out = []
    for example in examples:
        result = llm.create_chat_completion(
            messages=list(example.messages[:-1]),  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=48,
        )
        out.append(str(result["choices"][0]["message"]["content"] or ""))  # type: ignore[index]
    return out


def _padding(batches: list[Any]) -> float:
    positions = sum(int(b["attention_mask"].numel()) for b in batches)
    return round(1 - sum(int(b["attention_mask"].sum()) for b in batches) / positions, 3)


def _speed(args: argparse.Namespace, train_set: list[Example]) -> dict[str, Any]:
    """Training steps of each variant, interleaved round by round on the same batches so a
    busy machine slows them alike: tokens/s per variant (median over rounds)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from keel.finetune.trainer import TARGET_MODULES, _batch, answer_loss, encode, load_base

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    q_v = ["q_proj", "v_proj"]
    # (LoRA modules, first layer with LoRA): backward stops at the lowest layer with LoRA.
    shapes = {
        "all": (list(TARGET_MODULES), 0),
        "q_v": (q_v, 0),
        "all_top15": (list(TARGET_MODULES), 15),
        "all_top10": (list(TARGET_MODULES), 20),
        "q_v_top15": (q_v, 15),
    }
    models: dict[str, Any] = {}
    tokenizer = None
    for name, (modules, first) in shapes.items():
        tokenizer, base = load_base(smollm2_gguf(), args.cache)
        layers = base.config.num_hidden_layers
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=modules,
                            layers_to_transform=list(range(first, layers)),
                            task_type="CAUSAL_LM")  # fmt: skip
        models[name] = get_peft_model(base, config).train()
    assert tokenizer is not None
    rows = [encode(tokenizer, e, 256) for e in train_set]
    pad = int(tokenizer.pad_token_id)
    by_length = sorted(rows, key=lambda r: len(r[0]))

    def batches_of(rows: list[Any], size: int) -> list[Any]:
        return [_batch(rows[i : i + size], pad) for i in range(0, len(rows), size)]

    batches = {8: batches_of(rows, 8), 16: batches_of(rows, 16)}
    # Padding computed, as a share of a batch's positions: batches cut from a random order
    # against batches cut from length-sorted windows (the trainer's order).
    padded = {
        "random": _padding(batches[8]),
        "sorted_windows": _padding(batches_of(by_length, 8)),
    }

    def answer(model: Any, batch: Any) -> Any:
        return answer_loss(model, batch)

    def answer_bf16(model: Any, batch: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return answer_loss(model, batch)

    variants = {
        "all_modules_answer_logits": ("all", answer, 8),
        "q_v": ("q_v", answer, 8),
        "all_modules_top15_layers": ("all_top15", answer, 8),
        "all_modules_top10_layers": ("all_top10", answer, 8),
        "q_v_top15_layers": ("q_v_top15", answer, 8),
        "all_modules_top15_layers_batch16": ("all_top15", answer, 16),
    }
    if args.bf16 or native_bf16():  # emulated bf16 is several times slower: opt-in only
        variants["all_modules_bf16"] = ("all", answer_bf16, 8)
    for which, loss_of, size in variants.values():  # untimed: first calls allocate
        loss_of(models[which], batches[size][-1]).backward()
        models[which].zero_grad(set_to_none=True)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    tokens: dict[str, int] = {name: 0 for name in variants}
    losses: dict[str, float] = {}
    for round_ in range(args.speed):
        for name, (which, loss_of, size) in variants.items():
            model = models[which]
            batch = batches[size][round_ % len(batches[size])]
            started = time.perf_counter()
            loss = loss_of(model, batch)
            loss.backward()
            model.zero_grad(set_to_none=True)  # timing only: the weights stay as loaded
            seconds[name].append(time.perf_counter() - started)
            tokens[name] += int(batch["attention_mask"].sum())
            losses[name] = round(float(loss.detach()), 4)
        times = {name: round(seconds[name][-1], 2) for name in variants}
        print(f"round {round_ + 1}/{args.speed}: {times}", file=sys.stderr, flush=True)
    base_rate = tokens["all_modules_answer_logits"] / sum(seconds["all_modules_answer_logits"])
    return {
        "speed": {
            name: {
                "step_seconds_median": round(statistics.median(seconds[name]), 3),
                "tokens_per_second": round(tokens[name] / sum(seconds[name]), 1),
                "against_all_modules": round(tokens[name] / sum(seconds[name]) / base_rate, 2),
                "last_loss": losses[name],
            }
            for name in variants
        },
        "padding_share": padded,
        "rounds": args.speed,
        "threads": args.threads,
        "native_bf16": native_bf16(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def _cancel_run(args: argparse.Namespace) -> dict[str, Any]:
    """A job through FineTuneSystem (job store, executor, runner), cancelled mid-training."""
    import asyncio

    from keel.finetune.service import JobRequest
    from keel.finetune.system import FineTuneSystem
    from keel.registry.specs import ModelVersionSpec, ProviderSpec
    from keel.server.services import build_services
    from keel.settings import Settings
    from keel.store import migrate
    from keel.store.db import Database

    data_dir = args.workdir or Path(tempfile.mkdtemp(prefix="keel-ft-cancel-"))
    settings = Settings.model_validate(
        {"data_dir": data_dir, "local_model": False, "embeddings": False}
    )
    database = Database(settings.effective_database_url)
    migrate.upgrade(database)
    services = build_services(settings, database)
    _, token = services.keys.create_key(
        project_id=services.keys.ensure_project(), role="admin", name="bench"
    )
    principal = await services.keys.verify(token)
    project = principal.project_id
    services.registry.put_provider(
        project,
        ProviderSpec(name="local", kind="local", config={"model_path": "bundled:smollm2"}),
        "bench",
    )
    services.registry.add_model_version(
        project,
        ModelVersionSpec(name="smollm2", provider="local", upstream_model="smollm2"),
        "bench",
    )
    rows, _ = generate(args.train, 0, seed=7)
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    system = FineTuneSystem(database, services.registry, data_dir / "finetune")
    if args.cache is not None:
        system.runner.base_cache = args.cache
    file = system.runner.sources.files.create(
        project, principal.key_id, "fine-tune", "train.jsonl", content, len(rows)
    )
    await system.start()
    try:
        body = JobRequest.model_validate(
            {
                "model": "smollm2",
                "training_file": file.id,
                "hyperparameters": {
                    "n_epochs": args.epochs or "auto",
                    "batch_size": args.batch_size,
                },
                "lora": {"threads": args.threads},
            }
        )
        job = await asyncio.to_thread(system.service.create, principal, body)
        system.executor.wake()
        step = 0
        while step < args.cancel_after:
            await asyncio.sleep(0.02)
            events, _ = await asyncio.to_thread(system.service.events, project, job.id, None, 5)
            step = max(
                [step, *(e["data"].get("step", 0) for e in events if e["type"] == "metrics")]
            )
        cancelled_at = time.monotonic()
        await asyncio.to_thread(system.service.cancel, principal, job.id)
        system.executor.cancelled(job.id)  # as the cancel route does
        while True:
            current, _ = await asyncio.to_thread(system.service.job, project, job.id)
            if current.final:
                break
            await asyncio.sleep(0.01)
        seconds = time.monotonic() - cancelled_at
    finally:
        await system.stop()
    versions = [m["ref"] for m in services.registry.list_models(project)]
    return {
        "cancel": {
            "after_step": step,
            "seconds_to_terminal_state": round(seconds, 2),
            "state": current.state,
            "model_versions_after": versions,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="Default: n_epochs auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr-multiplier", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="Converted-base cache folder")
    parser.add_argument(
        "--cancel-after", type=int, default=None, help="Cancel a job as it reports step N"
    )
    parser.add_argument(
        "--speed", type=int, default=None, help="Time N rounds of each training-step variant"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="Time bf16 autocast too where the CPU emulates it"
    )
    args = parser.parse_args()
    if args.cancel_after is not None:
        import asyncio

        print(json.dumps(asyncio.run(_cancel_run(args)), indent=2))
        return

    base = smollm2_gguf()
    train_rows, test_rows = generate(args.train, args.test, seed=7)
    train_set, valid_set = split(_examples(train_rows), 0.1, seed=42)
    test_set = _examples(test_rows)
    if args.speed is not None:
        print(json.dumps(_speed(args, train_set), indent=2))
        return
    load_before = [round(x, 2) for x in os.getloadavg()]
    hyper = Hyper(
        n_epochs=args.epochs or auto_epochs(len(train_rows)),
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
    load_after_training = [round(x, 2) for x in os.getloadavg()]
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
        json_equal(a, r)
        for a, r in zip(_answers(base, test_set, args.threads), references, strict=True)
    ]
    tuned_answers = _answers(workdir / "model.gguf", test_set, args.threads)
    tuned_scores = [json_equal(a, r) for a, r in zip(tuned_answers, references, strict=True)]
    comparison = judge(base_scores, tuned_scores, min_margin=0.1)
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
                    "lora_modules": list(hyper.lora_modules),
                    "lora_layers_share": hyper.lora_layers,
                    "bf16": hyper.uses_bf16(),
                    "native_bf16": native_bf16(),
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
                "load_average": {
                    "before": load_before,
                    "after_training": load_after_training,
                    "end": [round(x, 2) for x in os.getloadavg()],
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
