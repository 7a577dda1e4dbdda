"""LoRA training on CPU with transformers + peft: the base read from its GGUF (dequantised),
conversations rendered with the base's own chat template, loss on the assistant's last
answer only, a validation split, early stop, fixed seeds and resumable checkpoints.

torch, transformers and peft are imported inside the functions: importing this module costs
nothing, and only a process that trains pays for them.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.finetune.data import Example

if TYPE_CHECKING:
    import torch

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BASE_LEARNING_RATE = 1e-3  # times learning_rate_multiplier; LoRA on a 135M model likes it high


class Cancelled(Exception):
    """Training stopped because the job was cancelled; nothing is registered."""


@dataclass(frozen=True, slots=True)
class Hyper:
    n_epochs: int = 3
    batch_size: int = 8
    learning_rate_multiplier: float = 1.0
    lora_r: int = 8
    lora_alpha: int = 16
    max_seq_len: int = 256
    validation_fraction: float = 0.1
    eval_every: int = 10  # steps between validation passes (each is a checkpoint)
    patience: int = 3  # validation passes without improvement before stopping early
    seed: int = 42
    threads: int = 2
    lora_modules: tuple[str, ...] = TARGET_MODULES
    # LoRA on this share of the decoder layers, the top ones (1.0: all). The backward pass
    # stops at the lowest layer with an adapter, so the layers below cost a forward pass
    # alone: the top half made a step 1.2x to 2.3x faster side by side (finetuning.md).
    lora_layers: float = 0.5
    precision: str = "auto"  # "auto": bf16 autocast where the CPU has bf16 hardware; "fp32"

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier

    def uses_bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and native_bf16())


@dataclass(frozen=True, slots=True)
class StepReport:
    step: int
    total_steps: int
    epoch: float
    train_loss: float
    tokens: int  # trained so far
    tokens_per_second: float
    eta_seconds: float | None


@dataclass(frozen=True, slots=True)
class CheckpointReport:
    step: int
    epoch: float
    train_loss: float
    valid_loss: float
    path: str


@dataclass
class TrainResult:
    adapter_dir: Path  # the best checkpoint's adapter (peft layout)
    steps: int
    best_step: int
    first_valid_loss: float
    best_valid_loss: float
    trained_tokens: int
    seconds: float
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        drop = 1 - self.best_valid_loss / self.first_valid_loss if self.first_valid_loss else 0.0
        return {
            "steps": self.steps,
            "best_step": self.best_step,
            "first_valid_loss": round(self.first_valid_loss, 4),
            "best_valid_loss": round(self.best_valid_loss, 4),
            "valid_loss_drop": round(drop, 4),
            "trained_tokens": self.trained_tokens,
            "seconds": round(self.seconds, 1),
            "tokens_per_second": round(self.trained_tokens / max(self.seconds, 1e-6), 1),
            "stopped_early": self.stopped_early,
        }


@dataclass(frozen=True, slots=True)
class Callbacks:
    on_step: Callable[[StepReport], None] = lambda report: None
    on_checkpoint: Callable[[CheckpointReport], None] = lambda report: None
    should_stop: Callable[[], bool] = lambda: False


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16).

    Without it, PyTorch emulates bf16 by converting to float32 and back, which costs more
    than it saves; an unreadable cpuinfo (not Linux) counts as no."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def load_base(gguf: Path, cache: Path | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) from a GGUF file, dequantised to float32.

    Reading a GGUF through transformers takes a minute on a busy 2-core machine; with
    `cache`, the converted model is saved there once (safetensors) and read back in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    stat = gguf.stat()
    folder = cache / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}" if cache else None
    if folder is not None and (folder / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        if folder is not None:
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            tokenizer.save_pretrained(str(partial))
            # The weights are plain float32 now; only the loader's marker says "gguf".
            model.hf_quantizer = None  # type: ignore[assignment]
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(partial))
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def encode(tokenizer: Any, example: Example, max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels are -100 except over the last assistant answer."""
    messages = list(example.messages)
    prompt = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, tokenize=False
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:  # a template that re-renders history
        prompt_ids = full_ids[: len(prompt_ids)]
    labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    # Keep the answer: cut the prompt from the left when the pair is too long.
    over = len(full_ids) - max_len
    if over > 0:
        full_ids, labels = full_ids[over:], labels[over:]
    return list(full_ids), labels


def _batch(rows: Sequence[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _epoch_batches(lengths: Sequence[int], size: int, epoch: int, seed: int) -> list[list[int]]:
    """The epoch's batches of row indices: a seeded shuffle, then each window of 8 batches
    sorted by length before it is cut, so a batch pads to a near neighbour's length rather
    than to the longest of a random draw (same rows per epoch, less padding computed)."""
    order = list(range(len(lengths)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    window = size * 8
    batches: list[list[int]] = []
    for at in range(0, len(order), window):
        part = sorted(order[at : at + window], key=lambda i: lengths[i])
        batches.extend(part[i : i + size] for i in range(0, len(part), size))
    return batches


def answer_loss(model: Any, batch: dict[str, torch.Tensor], reduction: str = "mean") -> Any:
    """Cross-entropy over the answer tokens only. The vocabulary projection, a fifth of the
    forward pass of a small model, runs on the positions that are scored, not on every one
    (the prompt's and the padding's logits are never needed)."""
    import torch

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    scored = targets != -100
    logits = causal.lm_head(hidden[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits.float(), targets[scored], reduction=reduction)


def validation_loss(
    model: Any, rows: Sequence[tuple[list[int], list[int]]], pad: int, size: int
) -> float:
    """Mean loss per answer token over the validation rows."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for at in range(0, len(rows), size):
            batch = _batch(rows[at : at + size], pad)
            total += float(answer_loss(model, batch, reduction="sum"))
            count += int((batch["labels"][:, 1:] != -100).sum())
    model.train()
    return total / max(count, 1)


def _latest(workdir: Path) -> Path | None:
    done = sorted(
        (p for p in workdir.glob("step-*") if (p / "state.json").is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return done[-1] if done else None


def train(
    base_gguf: Path,
    train_examples: Sequence[Example],
    valid_examples: Sequence[Example],
    hyper: Hyper,
    workdir: Path,
    callbacks: Callbacks | None = None,
    cache: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter; resumes from the newest checkpoint in `workdir` when there is one.

    Raises Cancelled as soon as `should_stop` says so (checked before every step)."""
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    cb = callbacks or Callbacks()
    torch.set_num_threads(max(1, hyper.threads))
    torch.manual_seed(hyper.seed)
    random.seed(hyper.seed)
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer, base = load_base(base_gguf, cache)
    layers = int(base.config.num_hidden_layers)
    lowest = layers - max(1, math.ceil(layers * min(hyper.lora_layers, 1.0)))
    config = LoraConfig(
        r=hyper.lora_r,
        lora_alpha=hyper.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(hyper.lora_modules),
        layers_to_transform=list(range(lowest, layers)),
        task_type="CAUSAL_LM",
    )
    precision: AbstractContextManager[Any] = (
        torch.autocast("cpu", dtype=torch.bfloat16) if hyper.uses_bf16() else nullcontext()
    )
    model = get_peft_model(base, config)
    model.train()

    def stop_in_step(*_: Any) -> None:
        # Checked before each decoder layer too: a cancel waits a layer, not a whole step.
        if cb.should_stop():
            raise Cancelled

    def stop_in_backward(_: Any, __: Any, output: Any) -> None:
        # The backward pass is two thirds of a step: check before each layer's share of it.
        hidden = output[0] if isinstance(output, tuple) else output
        if torch.is_grad_enabled() and getattr(hidden, "requires_grad", False):
            hidden.register_hook(stop_in_step)

    for layer in getattr(getattr(base, "model", None), "layers", []):
        layer.register_forward_pre_hook(stop_in_step)
        layer.register_forward_hook(stop_in_backward)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=hyper.learning_rate
    )
    pad = int(tokenizer.pad_token_id)
    train_rows = [encode(tokenizer, e, hyper.max_seq_len) for e in train_examples]
    valid_rows = [encode(tokenizer, e, hyper.max_seq_len) for e in valid_examples]
    lengths = [len(ids) for ids, _ in train_rows]
    per_epoch = math.ceil(len(train_rows) / hyper.batch_size)
    total_steps = per_epoch * hyper.n_epochs

    def lr_at(step: int) -> float:  # linear decay to 0 over the planned steps
        return hyper.learning_rate * max(0.0, 1 - step / total_steps)

    state: dict[str, Any] = {
        "step": 0,
        "tokens": 0,
        "seconds": 0.0,
        "history": [],
        "best_step": 0,
        "best_loss": None,
        "first_loss": None,
        "bad": 0,
    }
    resume = _latest(workdir)
    if resume is not None:
        state = json.loads((resume / "state.json").read_text())
        weights = torch.load(resume / "adapter.pt", weights_only=True)
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(torch.load(resume / "optimizer.pt", weights_only=True))
    if state["first_loss"] is None:
        with precision:
            state["first_loss"] = validation_loss(model, valid_rows, pad, hyper.batch_size)
        state["best_loss"] = state["first_loss"]
    started = time.monotonic() - state["seconds"]
    stopped_early = False
    step = first_step = state["step"]
    here = time.monotonic()
    running_loss: list[float] = []
    batches: dict[int, list[list[int]]] = {}
    while step < total_steps:
        epoch, within = divmod(step, per_epoch)
        if epoch not in batches:
            batches = {epoch: _epoch_batches(lengths, hyper.batch_size, epoch, hyper.seed)}
        chosen = batches[epoch][within]
        if cb.should_stop():
            raise Cancelled
        batch = _batch([train_rows[i] for i in chosen], pad)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with precision:
            loss = answer_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["tokens"] += int(batch["attention_mask"].sum())
        running_loss.append(float(loss.detach()))
        elapsed = time.monotonic() - started
        rate = state["tokens"] / max(elapsed, 1e-6)
        per_step = (time.monotonic() - here) / (step - first_step)
        cb.on_step(
            StepReport(
                step,
                total_steps,
                step / per_epoch,
                float(loss.detach()),
                state["tokens"],
                rate,
                per_step * (total_steps - step),
            )
        )
        if step % hyper.eval_every and step != total_steps:
            continue
        train_loss = sum(running_loss) / len(running_loss)
        running_loss.clear()
        with precision:
            valid = validation_loss(model, valid_rows, pad, hyper.batch_size)
        state["history"].append({"step": step, "train_loss": train_loss, "valid_loss": valid})
        improved = valid < state["best_loss"] - 1e-4
        if improved:
            state["best_loss"], state["best_step"], state["bad"] = valid, step, 0
        else:
            state["bad"] += 1
        state["step"], state["seconds"] = step, time.monotonic() - started
        path = _save(workdir, model, optimizer, state, best=improved)
        cb.on_checkpoint(CheckpointReport(step, step / per_epoch, train_loss, valid, str(path)))
        if state["bad"] >= hyper.patience:
            stopped_early = True
            break
    best = workdir / "best"
    if not (best / "adapter.pt").is_file():  # never improved: the base itself is best
        _save(workdir, model, optimizer, state, best=True)
    return TrainResult(
        adapter_dir=best,
        steps=step,
        best_step=state["best_step"],
        first_valid_loss=state["first_loss"],
        best_valid_loss=state["best_loss"],
        trained_tokens=state["tokens"],
        seconds=time.monotonic() - started,
        stopped_early=stopped_early,
        history=state["history"],
    )


def _save(workdir: Path, model: Any, optimizer: Any, state: dict[str, Any], *, best: bool) -> Path:
    """Write the checkpoint to a temporary folder and rename it: a crash mid-write leaves
    the previous checkpoint as the newest complete one."""
    import torch
    from peft import get_peft_model_state_dict

    weights = get_peft_model_state_dict(model)
    path = workdir / f"step-{state['step']}"
    partial = workdir / f".partial-{state['step']}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    torch.save(weights, partial / "adapter.pt")
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    (partial / "state.json").write_text(json.dumps(state))
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    if best:
        best_dir = workdir / "best"
        shutil.rmtree(best_dir, ignore_errors=True)
        best_dir.mkdir()
        torch.save(weights, best_dir / "adapter.pt")
        config = model.peft_config["default"]
        meta = {"r": config.r, "lora_alpha": config.lora_alpha, "step": state["step"]}
        (best_dir / "lora.json").write_text(json.dumps(meta))
    kept = sorted(workdir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in kept[:-2]:  # the two newest are enough to resume from
        shutil.rmtree(old, ignore_errors=True)
    return path


def hyper_dict(hyper: Hyper) -> dict[str, Any]:
    return asdict(hyper)
