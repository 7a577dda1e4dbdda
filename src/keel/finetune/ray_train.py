"""Fine-tuning on a Ray cluster: the same `train` function runs in a Ray actor on any node,
and what it makes comes back through Keel.

The Keel process that holds the job's lease keeps every store write: it polls the actor for
step and checkpoint reports and records them through the runner's callbacks, passes a
cancel on, and receives the best adapter's weights through Ray's object store. It then
merges them into a GGUF and registers the version, exactly as after a local training.
The base GGUF and the work folder are paths: on a one-machine cluster they are this
machine's; across nodes they must be on a file system every node shares (docs/scale-out.md).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.finetune.data import Example
from keel.finetune.trainer import (
    Callbacks,
    Cancelled,
    CheckpointReport,
    Hyper,
    StepReport,
    TrainResult,
    hyper_dict,
    train,
)
from keel.jobs.ray_executor import connect, import_ray

POLL_SECONDS = 0.5  # how often reports are fetched from the actor, and a cancel looked for
# How long the actor may take to hand over its reports: it answers from its own thread, so
# only a lost node or cluster makes it wait (the driver outlives the cluster: ray_link.py).
REPORTS_TIMEOUT_S = 60.0


class TrainingActor:
    """Runs `train` on a Ray worker (in one of its two threads); the Keel process fetches
    the reports and asks it to stop from the other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()

    def train(
        self,
        base_gguf: str,
        train_examples: list[Example],
        valid_examples: list[Example],
        hyper: dict[str, Any],
        workdir: str,
        cache: str | None,
    ) -> dict[str, Any]:
        """The result's fields and the best adapter (bytes), or {"cancelled": true}."""
        callbacks = Callbacks(
            on_step=lambda report: self._add("step", report),
            on_checkpoint=lambda report: self._add("checkpoint", report),
            should_stop=self._stop.is_set,
        )
        try:
            result = train(
                Path(base_gguf),
                train_examples,
                valid_examples,
                Hyper(**hyper),
                Path(workdir),
                callbacks,
                cache=Path(cache) if cache else None,
            )
        except Cancelled:
            return {"cancelled": True}
        fields = {
            f.name: getattr(result, f.name)
            for f in dataclasses.fields(result)
            if f.name != "adapter_dir"
        }
        return {
            "cancelled": False,
            "result": fields,
            "adapter": (result.adapter_dir / "adapter.pt").read_bytes(),
            "lora": (result.adapter_dir / "lora.json").read_text(),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }

    def _add(self, kind: str, report: StepReport | CheckpointReport) -> None:
        with self._lock:
            self._reports.append((kind, dataclasses.asdict(report)))

    def reports(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            taken, self._reports = self._reports, []
        return taken

    def stop(self) -> None:
        self._stop.set()


class RayTraining:
    """Runs trainer.train on the Ray cluster at `address`; it takes the same arguments and
    gives the same result, so the runner uses it in place of the local call."""

    def __init__(self, address: str, poll_seconds: float = POLL_SECONDS):
        self.address = address
        self.poll_seconds = poll_seconds
        self.last_worker: str | None = None  # where the last training ran (host:pid)

    def __call__(
        self,
        base_gguf: Path,
        train_examples: Sequence[Example],
        valid_examples: Sequence[Example],
        hyper: Hyper,
        workdir: Path,
        callbacks: Callbacks | None = None,
        cache: Path | None = None,
    ) -> TrainResult:
        ray = import_ray()
        connect(ray, self.address)
        cb = callbacks or Callbacks()
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < hyper.threads:
            raise RuntimeError(
                f"the training asks for {hyper.threads} CPUs (hyperparameter threads) and the "
                f"Ray cluster at {self.address} has {cpus:g}; lower threads or add a node"
            )
        actor = (
            ray.remote(TrainingActor)
            .options(num_cpus=hyper.threads, max_concurrency=2, max_restarts=0)
            .remote()
        )
        try:
            running = actor.train.remote(
                str(base_gguf),
                list(train_examples),
                list(valid_examples),
                hyper_dict(hyper),
                str(workdir),
                str(cache) if cache else None,
            )
            stopping = False
            try:
                while True:
                    ready, _ = ray.wait([running], timeout=self.poll_seconds)
                    _replay(ray.get(actor.reports.remote(), timeout=REPORTS_TIMEOUT_S), cb)
                    if ready:
                        break
                    if not stopping and cb.should_stop():
                        actor.stop.remote()  # the actor raises Cancelled at its next layer
                        stopping = True
                answer: dict[str, Any] = ray.get(running)
            except ray.exceptions.RayActorError as error:
                raise RuntimeError(
                    f"the Ray worker training this job died ({error}); create the job again"
                ) from None
            except ray.exceptions.GetTimeoutError:
                raise RuntimeError(
                    f"the Ray worker training this job did not answer for {REPORTS_TIMEOUT_S:.0f}"
                    f" s (is the cluster at {self.address} still up?); create the job again"
                ) from None
        finally:
            ray.kill(actor)
        if answer["cancelled"]:
            raise Cancelled
        self.last_worker = str(answer["worker"])
        best = _write_best(workdir, answer["adapter"], answer["lora"])
        return TrainResult(adapter_dir=best, **answer["result"])


def _replay(reports: list[tuple[str, dict[str, Any]]], cb: Callbacks) -> None:
    for kind, report in reports:
        if kind == "step":
            cb.on_step(StepReport(**report))
        else:
            cb.on_checkpoint(CheckpointReport(**report))


def _write_best(workdir: Path, adapter: bytes, lora: str) -> Path:
    """The adapter the worker sent, where a local training leaves it (<workdir>/best),
    written to a temporary folder first."""
    best = workdir / "best"
    partial = workdir / f".best-{time.monotonic_ns()}"
    partial.mkdir(parents=True)
    (partial / "adapter.pt").write_bytes(adapter)
    (partial / "lora.json").write_text(lora)
    shutil.rmtree(best, ignore_errors=True)
    partial.rename(best)
    return best
