"""FineTuneService: create, read and cancel fine-tuning jobs, as OpenAI fine_tuning.job objects.

Creating a job checks everything that needs no compute first (the files exist and every
line is a conversation, there are enough examples, the base exists and can be tuned, the
hyperparameters make sense): bad input is a 4xx naming the cause, and nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.auth import audit
from keel.auth.keys import Principal
from keel.errors import InvalidRequest, NotFound
from keel.finetune.data import auto_epochs, check_count
from keel.finetune.evaluate import EvaluationOptions, check_options
from keel.finetune.executor import KIND
from keel.finetune.register import Registrar
from keel.finetune.sources import Sources
from keel.finetune.store import FineTuneStore, Run
from keel.finetune.trainer import Hyper, hyper_dict
from keel.jobs.model import Job
from keel.jobs.store import JobStore
from keel.store.db import Database

MAX_EVENTS = 20_000


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Literal["auto"] = Field("auto", description="Passes over the training set")
    batch_size: int | Literal["auto"] = Field("auto", description="Examples per step")
    learning_rate_multiplier: float | Literal["auto"] = Field(
        "auto", description="Times the base LoRA learning rate (1e-3)"
    )


class Supervised(BaseModel):
    model_config = ConfigDict(extra="allow")
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["supervised", "lora"] = "supervised"
    supervised: Supervised | None = None


class GuardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anonymize_pii: bool = Field(False, description="Replace PII with placeholders before training")
    block: bool = Field(False, description="Fail the job when secrets or injections are found")


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1, le=1024)
    max_seq_len: int = Field(256, ge=16, le=4096)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    eval_every: int = Field(10, ge=1, le=10_000)
    patience: int = Field(3, ge=1, le=100)
    threads: int = Field(2, ge=1, le=256)
    layers: float = Field(
        0.5, gt=0, le=1, description="Share of the decoder layers, the top ones, given LoRA"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast only where the CPU has bf16 hardware"
    )


class JobRequest(BaseModel):
    """POST /v1/fine_tuning/jobs, as OpenAI's, plus Keel's `guard`, `lora` and `evaluation`
    options (the SDK sends them with `extra_body`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Base model version (name@version, or a name: its newest)")
    training_file: str = Field(
        description="A file uploaded with purpose=fine-tune, or dataset:NAME[@VERSION]"
    )
    validation_file: str | None = Field(
        None, description="Held-out conversations (optional): a file id or dataset:NAME[@VERSION]"
    )
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    guard: GuardOptions = Field(default_factory=GuardOptions)
    lora: LoraOptions = Field(default_factory=LoraOptions)
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)


def _auto(value: Any, default: Any) -> Any:
    return default if value in (None, "auto") else value


def resolve_hyper(body: JobRequest, examples: int) -> Hyper:
    given = body.hyperparameters
    if given is None and body.method and body.method.supervised:
        given = body.method.supervised.hyperparameters
    given = given or Hyperparameters()
    epochs = _auto(given.n_epochs, auto_epochs(examples))
    batch = _auto(given.batch_size, 8)
    lr = _auto(given.learning_rate_multiplier, 1.0)
    if not 1 <= epochs <= 50:
        raise InvalidRequest("n_epochs must be from 1 to 50", param="hyperparameters.n_epochs")
    if not 1 <= batch <= 256:
        raise InvalidRequest("batch_size must be from 1 to 256", param="hyperparameters.batch_size")
    if not 0 < lr <= 100:
        raise InvalidRequest(
            "learning_rate_multiplier must be above 0 and at most 100",
            param="hyperparameters.learning_rate_multiplier",
        )
    lora = body.lora
    return Hyper(
        n_epochs=int(epochs),
        batch_size=int(batch),
        learning_rate_multiplier=float(lr),
        lora_r=lora.r,
        lora_alpha=lora.alpha,
        max_seq_len=lora.max_seq_len,
        validation_fraction=lora.validation_fraction,
        eval_every=lora.eval_every,
        patience=lora.patience,
        seed=body.seed if body.seed is not None else 42,
        threads=lora.threads,
        lora_layers=lora.layers,
        precision=lora.precision,
    )


@dataclass
class FineTuneService:
    jobs: JobStore
    sources: Sources
    runs: FineTuneStore
    registrar: Registrar
    database: Database

    def _audit(self, actor: Principal, action: str, job: Job, after: Any = None) -> None:
        with self.database.session() as session:
            audit.record(
                session,
                actor,
                action,
                "fine_tuning_job",
                job.id,
                after=after,
                project_id=job.project_id,
            )

    def create(self, principal: Principal, body: JobRequest) -> Job:
        project_id = principal.project_id
        training = self.sources.load(project_id, body.training_file, "training_file")
        check_count(training.examples, "training_file")
        validation = None
        if body.validation_file:
            validation = self.sources.load(project_id, body.validation_file, "validation_file")
        evaluation = body.evaluation
        if evaluation.enabled:
            check_options(evaluation, principal)
        if evaluation.enabled and evaluation.file:
            held = self.sources.load(project_id, evaluation.file, "evaluation.file")
            if not held.examples:
                raise InvalidRequest(
                    f"evaluation.file {held.ref} holds no conversations; give held-out "
                    "conversations, or leave it out to use the job's validation data",
                    param="evaluation.file",
                )
            evaluation = evaluation.model_copy(update={"file": held.ref})
        base, _ = self.registrar.resolve_base(project_id, body.model)
        count = len(training.examples)
        hyper = resolve_hyper(body, count)
        if body.metadata is not None and len(body.metadata) > 16:
            raise InvalidRequest("metadata holds at most 16 pairs", param="metadata")
        params = {
            "model": base["ref"],
            "training_file": training.ref,
            "validation_file": validation.ref if validation else None,
            "examples": count,
            "hyper": hyper_dict(hyper),
            "suffix": body.suffix,
            "metadata": body.metadata,
            "guard": body.guard.model_dump(),
            "evaluation": evaluation.model_dump(),
        }
        message = f"created: {count} training conversations from {training.ref}, base {base['ref']}"
        job = self.jobs.create(KIND, project_id, principal.key_id, params, [], message=message)
        self._audit(principal, "fine_tuning_job.create", job, params)
        return job

    def job(self, project_id: str, job_id: str) -> tuple[Job, Run | None]:
        job = self.jobs.get(job_id, project_id)
        if job is None or job.kind != KIND:
            raise NotFound(
                f"no fine-tuning job '{job_id}' in this project; list them with "
                "GET /v1/fine_tuning/jobs",
                param="fine_tuning_job_id",
                code="fine_tuning_job_not_found",
            )
        return job, self.runs.runs([job_id]).get(job_id)

    def page(
        self, project_id: str, after: str | None, limit: int
    ) -> tuple[list[tuple[Job, Run | None]], bool]:
        jobs, more = self.jobs.page(project_id, kind=KIND, after=after, limit=limit)
        runs = self.runs.runs([j.id for j in jobs])
        return [(j, runs.get(j.id)) for j in jobs], more

    def events(
        self, project_id: str, job_id: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, paged by `after` (an event id), as OpenAI lists them."""
        self.job(project_id, job_id)
        events = list(reversed(self.jobs.events(job_id, limit=MAX_EVENTS)))
        if after is not None:
            cursor = (
                int(after.removeprefix("ftevent-"))
                if after.removeprefix("ftevent-").isdigit()
                else 0
            )
            events = [e for e in events if e.id < cursor]
        page = events[:limit]
        data = [
            {
                "id": f"ftevent-{e.id}",
                "object": "fine_tuning.job.event",
                "created_at": int(e.at.timestamp()),
                "level": "warn" if e.level == "warning" else e.level,
                "message": e.message,
                "data": e.data,
                "type": "metrics" if e.data.get("type") == "metrics" else "message",
            }
            for e in page
        ]
        return data, len(events) > limit

    def cancel(self, principal: Principal, job_id: str) -> tuple[Job, Run | None]:
        project_id = principal.project_id
        job, run = self.job(project_id, job_id)
        if job.final:
            raise InvalidRequest(
                f"job {job_id} already ended ({job.state}); only a running or queued job "
                "can be cancelled",
                param="fine_tuning_job_id",
            )
        current = self.jobs.request_cancel(job_id, project_id) or job
        self._audit(principal, "fine_tuning_job.cancel", current, {"state": current.state})
        return current, run


def status(job: Job, run: Run | None) -> str:
    if job.state in ("succeeded", "failed", "cancelled"):
        return job.state
    if run is None:
        return "validating_files"
    return run.phase


def job_object(job: Job, run: Run | None) -> dict[str, Any]:
    """An OpenAI fine_tuning.job, with Keel's scan report and lineage under `keel`."""
    params, hyper = job.params, job.params.get("hyper", {})
    wire_hyper = {
        "n_epochs": hyper.get("n_epochs"),
        "batch_size": hyper.get("batch_size"),
        "learning_rate_multiplier": hyper.get("learning_rate_multiplier"),
    }
    error = None
    if job.state == "failed":
        error = {"code": "job_failed", "message": job.error or "failed", "param": None}
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": int(job.created_at.timestamp()),
        "error": error,
        "fine_tuned_model": run.model_ref if run else None,
        "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None,
        "hyperparameters": wire_hyper,
        "model": params.get("model"),
        "organization_id": job.project_id,
        "result_files": [],
        "seed": hyper.get("seed"),
        "status": status(job, run),
        "trained_tokens": run.trained_tokens if run and run.model_ref else None,
        "training_file": params.get("training_file"),
        "validation_file": params.get("validation_file"),
        "estimated_finish": None,
        "integrations": None,
        "metadata": params.get("metadata"),
        "user_provided_suffix": params.get("suffix"),
        "method": {"type": "supervised", "supervised": {"hyperparameters": wire_hyper}},
        "keel": {
            "scan": run.scan if run else None,
            "lineage": run.lineage if run and run.lineage else None,
            "result": job.result or None,
        },
    }
