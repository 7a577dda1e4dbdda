"""One fine-tuning job from pick-up to its end: scan (validating_files), wait for the trainer
(queued), train (running), merge into a GGUF, register the new version and start the
experiment that compares it with its base (evaluate.py).

Run in a worker thread by the executor. Every phase is safe to run again: a job taken up
after a crash scans again, resumes training from its newest checkpoint and registers the
version idempotently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import KeelError
from keel.finetune.data import Example, split
from keel.finetune.evaluate import Evaluator
from keel.finetune.export import ExportStopped, merge_to_gguf
from keel.finetune.register import Registrar
from keel.finetune.scan import ScanReport, default_scanners, scan_examples
from keel.finetune.sources import Sources
from keel.finetune.store import FineTuneStore
from keel.finetune.trainer import Callbacks, Cancelled, CheckpointReport, Hyper, StepReport, train
from keel.jobs.model import Job
from keel.jobs.store import JobStore

log = logging.getLogger("keel.finetune")
CANCEL_POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # succeeded | failed | cancelled | released (handed back, to resume later)
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Runner:
    jobs: JobStore
    sources: Sources
    runs: FineTuneStore
    registrar: Registrar
    work_root: Path
    base_path: Callable[[str, str], Path]  # (project, model ref) -> its GGUF
    trainer_lock: threading.Lock
    scanners: Callable[[], Any] = default_scanners
    base_cache: Path | None = None  # converted bases (default: <work_root>/bases)
    _loaded: Any = field(default=None, init=False, repr=False)  # scanners, built once

    def _scanners(self) -> Any:
        # Their models take a while to load: the process's later jobs reuse them.
        if self._loaded is None:
            self._loaded = self.scanners()
        return self._loaded

    trainer: Callable[..., Any] = train  # or RayTraining: the same call on a Ray cluster
    evaluator: Evaluator | None = None  # the server's: compares the new version with its base

    def run(self, job: Job, stop: threading.Event, cancel: threading.Event) -> Outcome:
        params = job.params
        run = self.runs.start(job.id, job.project_id, params["model"])
        try:  # checked at create; read again, as the file or dataset may have gone since
            examples = self.sources.load(job.project_id, params["training_file"], "training_file")
            valid_source = params.get("validation_file")
            if valid_source:
                valid = self.sources.load(job.project_id, valid_source, "validation_file").examples
                train_set = examples.examples
            else:
                hyper = params["hyper"]
                train_set, valid = split(
                    examples.examples, hyper["validation_fraction"], hyper["seed"]
                )
        except KeelError as error:
            return Outcome("failed", error=error.message)
        guard = params.get("guard", {})
        anonymize = bool(guard.get("anonymize_pii", False))
        scanners = self._scanners()
        train_set, report = scan_examples(train_set, scanners, anonymize=anonymize)
        valid, valid_report = scan_examples(valid, scanners, anonymize=anonymize)
        merged = _merge_reports(report, valid_report)
        self.runs.update(job.id, scan=merged.as_dict())
        self.jobs.add_event(
            job.id,
            merged.summary(),
            "warning" if merged.counts else "info",
            {"phase": "validating_files", "scan": merged.as_dict()},
        )
        blocked = [k for k in ("secrets", "injections") if merged.as_dict()[k]]
        if guard.get("block", False) and blocked:
            lines = sorted(
                {n for kind, ns in merged.lines.items() if not kind.startswith("pii.") for n in ns}
            )[:10]
            return Outcome(
                "failed",
                error=f"the guard found {' and '.join(blocked)} in the training "
                f"data (lines {lines}); remove them, or create the job without "
                "guard.block to train anyway",
            )
        if self._cancel_requested(job.id, cancel):  # before the minute loading the model takes
            return Outcome("cancelled")
        if run.phase == "validating_files":
            self.runs.update(job.id, phase="queued")
        workdir = self.work_root / job.id
        with self.trainer_lock:
            if stop.is_set() and not cancel.is_set():
                return Outcome("released")
            if self._cancel_requested(job.id, cancel):  # while it waited for the trainer
                return Outcome("cancelled")
            self.runs.update(job.id, phase="running")
            try:
                result = self._train(job, train_set, valid, workdir, stop, cancel)
            except Cancelled:
                if cancel.is_set():
                    return Outcome("cancelled")
                return Outcome("released")
        self.jobs.add_event(job.id, "merging the adapter into a GGUF", data={"phase": "export"})
        import torch

        weights = torch.load(result.adapter_dir / "adapter.pt", weights_only=True)
        hyper = params["hyper"]
        out = workdir / "model.gguf"
        started = time.monotonic()
        try:
            export = merge_to_gguf(
                self.base_path(job.project_id, params["model"]),
                weights,
                hyper["lora_r"],
                hyper["lora_alpha"],
                out,
                should_stop=lambda: cancel.is_set() or stop.is_set(),
            )
        except ExportStopped:  # training is done: a restart merges again from `best`
            return Outcome("cancelled" if cancel.is_set() else "released")
        export["seconds"] = round(time.monotonic() - started, 1)
        if cancel.is_set():  # the last moment a cancel still leaves nothing registered
            return Outcome("cancelled")
        metrics = {**result.metrics(), "export": export}
        ref = self.registrar.register(job, out, metrics, merged.as_dict())
        self.runs.update(job.id, trained_tokens=result.trained_tokens)
        self.jobs.add_event(
            job.id,
            f"registered {ref}",
            data={"phase": "registered", "model": ref, "metrics": metrics},
        )
        result_info: dict[str, Any] = {"fine_tuned_model": ref, "metrics": metrics}
        evaluation = self._evaluate(job, ref, valid, stop)
        if evaluation is not None:
            result_info["evaluation"] = evaluation
        return Outcome("succeeded", result=result_info)

    def _evaluate(
        self, job: Job, tuned: str, valid: list[Example], stop: threading.Event
    ) -> dict[str, Any] | None:
        """The experiment comparing `tuned` with its base (evaluate.py), started. The version
        stays registered whatever happens here: a failure is the job's warning, not its end."""
        options = job.params.get("evaluation") or {}
        if not options.get("enabled", True) or self.evaluator is None:
            return None
        base = job.params["model"]
        try:
            held = valid
            if options.get("file"):
                loaded = self.sources.load(job.project_id, options["file"], "evaluation.file")
                held = loaded.examples
            self.jobs.add_event(
                job.id,
                f"evaluating {tuned} against {base} once it is served",
                data={"phase": "evaluation"},
            )
            started = self.evaluator.start(job, base, tuned, held, stop)
        except KeelError as error:
            self.jobs.add_event(
                job.id, f"evaluation not started: {error.message}", "warning",
                data={"phase": "evaluation"},
            )  # fmt: skip
            return {"error": error.message}
        runs = started["runs"]
        self.jobs.add_event(
            job.id,
            f"evaluation started: {runs['base']} ({base}) and {runs['tuned']} ({tuned}) on "
            f"{started['items']} conversations of {started['dataset']}; gate {started['gate']}",
            data={"phase": "evaluation", "evaluation": started},
        )
        return started

    def _cancel_requested(self, job_id: str, cancel: threading.Event) -> bool:
        current = self.jobs.get(job_id)
        if current is not None and current.state in ("cancelling", "cancelled"):
            cancel.set()
        return cancel.is_set()

    def _train(
        self,
        job: Job,
        train_set: Any,
        valid: Any,
        workdir: Path,
        stop: threading.Event,
        cancel: threading.Event,
    ) -> Any:
        hyper = Hyper(**job.params["hyper"])
        last = {"event": 0.0, "poll": 0.0}

        def should_stop() -> bool:
            now = time.monotonic()
            if now - last["poll"] >= CANCEL_POLL_SECONDS:  # a cancel sent to another process
                last["poll"] = now
                current = self.jobs.get(job.id)
                if current is not None and current.state in ("cancelling", "cancelled"):
                    cancel.set()
            return stop.is_set() or cancel.is_set()

        def on_step(report: StepReport) -> None:
            now = time.monotonic()
            if now - last["event"] < 1.0 and report.step != report.total_steps:
                return  # at most one metrics event a second
            last["event"] = now
            self.jobs.add_event(
                job.id,
                f"step {report.step}/{report.total_steps}: training loss={report.train_loss:.4f}",
                data={
                    "phase": "running",
                    "type": "metrics",
                    "step": report.step,
                    "total_steps": report.total_steps,
                    "train_loss": report.train_loss,
                    "tokens": report.tokens,
                    "tokens_per_second": report.tokens_per_second,
                    "eta_seconds": report.eta_seconds,
                },
            )

        def on_checkpoint(report: CheckpointReport) -> None:
            self.runs.add_checkpoint(
                job.id, report.step, report.epoch, report.train_loss, report.valid_loss, report.path
            )
            self.jobs.add_event(
                job.id,
                f"checkpoint at step {report.step}: validation loss={report.valid_loss:.4f}",
                data={
                    "phase": "running",
                    "type": "checkpoint",
                    "step": report.step,
                    "train_loss": report.train_loss,
                    "valid_loss": report.valid_loss,
                },
            )

        callbacks = Callbacks(on_step=on_step, on_checkpoint=on_checkpoint, should_stop=should_stop)
        base = self.base_path(job.project_id, job.params["model"])
        cache = self.base_cache or self.work_root / "bases"
        return self.trainer(base, train_set, valid, hyper, workdir, callbacks, cache=cache)


def _merge_reports(a: ScanReport, b: ScanReport) -> ScanReport:
    merged = ScanReport(examples=a.examples + b.examples, anonymized=a.anonymized + b.anonymized)
    for report in (a, b):
        for kind, count in report.counts.items():
            merged.counts[kind] = merged.counts.get(kind, 0) + count
        for kind, lines in report.lines.items():
            merged.lines.setdefault(kind, []).extend(lines)
    return merged
