"""A job's evaluation: when its version is registered, an experiment compares it with its base.

The held-out conversations (the job's `evaluation.file`, or else its validation data, which
training never learnt from) become a dataset, `finetune-<job id>`; one experiment then runs
it against both versions through the gateway, cache bypassed, and scores each answer
(`json_equal` by default). The two runs are ordinary experiment runs: the comparisons API,
`keel eval compare`, the console and the gate (`delta(json_equal.pass_rate)>=0.1` by
default, checked on the paired difference's whole confidence interval) read them like any
other. `keel finetune create --canary N` ships the version only when that gate passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.auth import audit
from keel.auth.keys import Principal
from keel.errors import InvalidRequest, KeelError
from keel.evals.datasets import DatasetService
from keel.evals.experiments import ExperimentSpec
from keel.evals.gates import parse_gate
from keel.evals.items import NewItem
from keel.evals.scorers import Deps, build_scorers
from keel.evals.service import EvalService
from keel.finetune.compare import margin_gate
from keel.finetune.data import Example
from keel.jobs.model import Job

DEFAULT_GATE = margin_gate(0.1)
READY_WAIT_SECONDS = 600.0  # a replica that is starting: llama.cpp loads the GGUF
NO_REPLICA_SECONDS = 60.0  # no replica at all: this process does not deploy the version
# Pages of 200 runs searched for the runs an earlier attempt of a job started: a job resumes
# soon after its restart, so its runs are among the newest.
EARLIER_RUN_PAGES = 5


class EvaluationOptions(BaseModel):
    """Keel's `evaluation` field of a job: how the tuned version is compared with its base."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the comparison once the version is registered")
    file: str | None = Field(
        None,
        description="Held-out conversations: a file id (purpose=fine-tune) or "
        "dataset:NAME[@VERSION] (default: the job's validation data)",
    )
    scorers: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"type": "json_equal"}],
        min_length=1,
        max_length=10,
        description="Scorers of each answer, as an experiment's",
    )
    gate: str = Field(
        DEFAULT_GATE,
        max_length=200,
        description="The gate `--canary` ships on, on the tuned run against the base run",
    )
    max_items: int = Field(100, ge=1, le=1000, description="Held-out conversations used, at most")
    max_tokens: int = Field(64, ge=1, le=4096, description="Answer length, in tokens, at most")


def check_options(options: EvaluationOptions, principal: Principal) -> None:
    """A 400 naming `evaluation.<field>` for a gate or scorer that cannot run."""
    try:
        scorers = build_scorers(options.scorers, Deps(principal=principal), check=False)
    except InvalidRequest as error:
        raise InvalidRequest(
            f"evaluation.{error.message}", param=f"evaluation.{error.param}", code=error.code
        ) from None
    try:
        gate = parse_gate(options.gate)
    except InvalidRequest as error:
        raise InvalidRequest(
            f"evaluation.gate: {error.message.removeprefix('gates[0]: ')}",
            param="evaluation.gate",
            code=error.code,
        ) from None
    metric = gate.metric.removesuffix(".pass_rate")
    names = [scorer.metric for scorer in scorers]
    if metric != "pass_rate" and metric not in names:
        raise InvalidRequest(
            f"evaluation.gate: {gate.metric!r} is not a metric of the scorers "
            f"({', '.join(names)}); gate on one of them, e.g. delta({names[0]}.pass_rate)>=0.1",
            param="evaluation.gate",
            code="invalid_gate",
        )


def dataset_name(job_id: str) -> str:
    return f"finetune-{job_id}"


@dataclass
class Evaluator:
    """Starts a job's experiment; built by the server, which owns the evaluation service."""

    datasets: DatasetService
    experiments: EvalService
    principal_of: Callable[[str], Principal | None]  # key id -> the key, if still valid
    readiness: Callable[[str], dict[str, Any]]  # model ref -> its deployment's check
    ready_wait_seconds: float = READY_WAIT_SECONDS
    no_replica_seconds: float = NO_REPLICA_SECONDS

    def start(
        self,
        job: Job,
        base: str,
        tuned: str,
        examples: Sequence[Example],
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """The dataset and the two runs (base, tuned), started; a KeelError says why not."""
        options = EvaluationOptions.model_validate(job.params.get("evaluation") or {})
        principal = self.principal_of(job.key_id)
        if principal is None:
            raise InvalidRequest(
                "the key that created the job is revoked or expired; start an experiment on "
                f"dataset {dataset_name(job.id)} with another key",
                param="key",
            )
        name = dataset_name(job.id)
        held = examples[: options.max_items]
        earlier = self._earlier_runs(job.project_id, name)
        if base in earlier and tuned in earlier:  # a job resumed after a restart: runs exist
            return {
                "dataset": f"{name}@1",
                "items": len(held),
                "runs": {"base": earlier[base], "tuned": earlier[tuned]},
                "gate": options.gate,
            }
        self._wait_until_served(tuned, stop or threading.Event())
        version = self._dataset(job, name, held)
        params = {"temperature": 0, "max_tokens": options.max_tokens}
        spec = ExperimentSpec.model_validate(
            {
                "name": name,
                "dataset": name,
                "version": version,
                "subjects": [
                    {"model": base, "name": f"base {base}", "params": params},
                    {"model": tuned, "name": f"tuned {tuned}", "params": params},
                ],
                "scorers": options.scorers,
            }
        )
        base_run, tuned_run = self.experiments.start(principal, spec)
        started = {
            "dataset": f"{name}@{version}",
            "items": len(held),
            "runs": {"base": base_run.id, "tuned": tuned_run.id},
            "gate": options.gate,
        }
        with self.datasets.database.session() as session:
            audit.record(
                session,
                f"key:{job.key_id} (fine-tuning job {job.id})",
                "fine_tuning_job.evaluate",
                "fine_tuning_job",
                job.id,
                after={"base": base, "tuned": tuned, **started},
                project_id=job.project_id,
            )
        return started

    def _earlier_runs(self, project_id: str, name: str) -> dict[str, str]:
        """Subject model -> run id of the runs an earlier attempt of this job started (the
        experiment is named after the job), among the project's newest runs."""
        found: dict[str, str] = {}
        for run in self.experiments.newest(project_id, EARLIER_RUN_PAGES):
            if run.params.get("experiment") == name:
                model = (run.params.get("subject") or {}).get("model")
                if isinstance(model, str):
                    found.setdefault(model, run.id)
        return found

    def _dataset(self, job: Job, name: str, examples: Sequence[Example]) -> int:
        """Version 1 of the job's held-out dataset; a job resumed after a crash finds it."""
        items = [
            NewItem(
                input={"messages": [dict(m) for m in example.messages[:-1]]},
                expected=example.messages[-1]["content"],
                metadata={"line": example.number},
            )
            for example in examples
        ]
        try:
            self.datasets.create(
                job.project_id,
                name,
                description=f"held-out conversations of fine-tuning job {job.id}",
                items=items,
                source=f"fine-tuning:{job.id}",
                created_by=job.key_id,
            )
        except KeelError as error:
            if error.code != "dataset_exists":
                raise
        return 1

    def _wait_until_served(self, ref: str, stop: threading.Event) -> None:
        """The new version's replica answers before its first item is sent (a process that
        stops meanwhile gives up, rather than holding its shutdown)."""
        started = time.monotonic()
        while True:
            check = self.readiness(ref)
            if check.get("ready"):
                return
            waited = time.monotonic() - started
            if not check and waited > self.no_replica_seconds:
                raise InvalidRequest(
                    f"no replica of {ref} is deployed by this Keel; compare it with its base "
                    "in an experiment (POST /api/experiments) where it is served",
                    param="model", code="model_not_ready",
                )  # fmt: skip
            if stop.is_set():
                raise InvalidRequest(
                    f"Keel stopped before {ref} was served; compare it with its base in an "
                    "experiment (POST /api/experiments) once it is", param="model",
                    code="model_not_ready",
                )  # fmt: skip
            if check.get("state") == "crashlooping" or waited > self.ready_wait_seconds:
                raise InvalidRequest(
                    f"{ref} is not served ({check.get('state') or 'no replica'}); compare it "
                    "with its base in an experiment (POST /api/experiments) once 'keel "
                    "deployments list' shows it ready",
                    param="model",
                    code="model_not_ready",
                )
            stop.wait(0.2)
