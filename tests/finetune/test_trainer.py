"""LoRA training of the bundled model on CPU: the loss falls on held-out data, checkpoints
carry step and losses, a crashed run resumes from its newest checkpoint, cancel stops it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from keel.finetune.trainer import (
    Callbacks,
    Cancelled,
    CheckpointReport,
    Hyper,
    StepReport,
    native_bf16,
    train,
)
from tests.finetune.conftest import task_examples

# Small enough for a shared 2-core machine, big enough for the loss to move.
HYPER = Hyper(
    n_epochs=2,
    batch_size=4,
    max_seq_len=96,
    eval_every=3,
    patience=5,
    threads=1,
    learning_rate_multiplier=2.0,
)


def test_training_lowers_the_validation_loss_and_keeps_checkpoints(
    base_gguf: Path, base_cache: Path, tmp_path: Path
) -> None:
    examples = task_examples(20)
    checkpoints: list[CheckpointReport] = []
    steps: list[StepReport] = []
    result = train(
        base_gguf,
        examples[:16],
        examples[16:],
        HYPER,
        tmp_path,
        Callbacks(on_step=steps.append, on_checkpoint=checkpoints.append),
        cache=base_cache,
    )
    assert result.steps == 8 == steps[-1].step == steps[-1].total_steps
    assert [c.step for c in checkpoints] == [3, 6, 8]
    assert all(c.valid_loss > 0 and c.train_loss > 0 for c in checkpoints)
    assert result.best_valid_loss < 0.9 * result.first_valid_loss  # >= 10 % lower
    assert (result.adapter_dir / "adapter.pt").is_file()
    assert steps[-1].tokens_per_second > 0


def test_a_crashed_run_resumes_from_its_newest_checkpoint(
    base_gguf: Path, base_cache: Path, tmp_path: Path
) -> None:
    examples = task_examples(10)
    # Four short steps, a checkpoint every two: the fewest that show a resume.
    hyper = replace(HYPER, max_seq_len=64, eval_every=2)
    seen: list[int] = []

    def crash_after_three() -> bool:
        return len(seen) >= 3

    with pytest.raises(Cancelled):
        train(
            base_gguf,
            examples[:8],
            examples[8:],
            hyper,
            tmp_path,
            Callbacks(on_step=lambda r: seen.append(r.step), should_stop=crash_after_three),
            cache=base_cache,
        )
    assert seen == [1, 2, 3]
    resumed: list[int] = []
    result = train(
        base_gguf,
        examples[:8],
        examples[8:],
        hyper,
        tmp_path,
        Callbacks(on_step=lambda r: resumed.append(r.step)),
        cache=base_cache,
    )
    assert resumed == [3, 4]  # step 2 was the newest checkpoint: step 3 runs again
    assert result.steps == 4


def test_cancel_before_a_step_stops_without_an_adapter(
    base_gguf: Path, base_cache: Path, tmp_path: Path
) -> None:
    examples = task_examples(12)
    with pytest.raises(Cancelled):
        train(
            base_gguf,
            examples[:10],
            examples[10:],
            HYPER,
            tmp_path,
            Callbacks(should_stop=lambda: True),
            cache=base_cache,
        )
    assert not (tmp_path / "best").exists()


def test_bf16_autocast_only_where_the_cpu_has_bf16_hardware(tmp_path: Path) -> None:
    # Emulated bf16 made a training step about 5x slower on an AVX2-only CPU (finetuning.md).
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert not native_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert native_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # Arm
    assert native_bf16(cpuinfo)
    assert not native_bf16(tmp_path / "missing")
    assert not Hyper(precision="fp32").uses_bf16()
