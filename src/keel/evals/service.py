"""EvalService: what the API, the console and the CLI (through the API) ask of evaluation —
start experiments (checked whole before any run is stored), read runs, compare them and
check gates. Runs are jobs of kind `experiment`; datasets live in DatasetService."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from keel.auth.keys import Principal
from keel.embeddings.base import Embedder
from keel.errors import InvalidRequest, NotFound
from keel.evals.compare import Run, compare, difference
from keel.evals.datasets import DatasetService
from keel.evals.experiments import KIND, ExperimentSpec
from keel.evals.gates import GateResult, check, parse_gate
from keel.evals.scorers import Deps, build_scorers
from keel.evals.summary import collect, summarise
from keel.jobs.model import Job
from keel.jobs.store import JobStore
from keel.knowledge.rag import parse_request

MAX_SAMPLES = 200_000
RUN_ID_PATTERN = r"^experiment_[0-9a-f]{24}$"


def run_title(job: Job) -> str:
    return str(job.params.get("subject_title") or job.id)


class EvalService:
    def __init__(
        self,
        datasets: DatasetService,
        jobs: JobStore,
        routes: Callable[[str], list[str]],
        embedder: Callable[[], Embedder | None],
        wake: Callable[[], None] = lambda: None,
        kbs: Callable[[str], list[str]] | None = None,
        workflows: Callable[[str], list[str]] | None = None,
    ):
        self.datasets = datasets
        self.jobs = jobs
        self.routes = routes
        self.embedder = embedder
        self.wake = wake
        self.kbs = kbs  # project → its knowledge bases' names (None: not served)
        self.workflows = workflows  # project → its workflows' names (None: not served)

    # -- starting -------------------------------------------------------------------------

    def start(self, principal: Principal, spec: ExperimentSpec) -> list[Job]:
        """One queued run per subject; every part is checked before the first is stored."""
        project = principal.project_id
        routes = frozenset(self.routes(project))
        deps = Deps(principal=principal, embedder=self.embedder, routes=routes)
        scorers = build_scorers(spec.scorers, deps, check=True)
        for index, subject in enumerate(spec.subjects):
            if subject.model is not None and subject.model not in routes:
                known = ", ".join(sorted(routes)[:10]) or "none"
                raise NotFound(
                    f"subjects[{index}].model: unknown model '{subject.model}' (known: "
                    f"{known}); use one of them, or add it with 'keel models add'",
                    param=f"subjects[{index}].model",
                    code="model_not_found",
                )
            if subject.kb is not None:
                self._check_kb(project, subject.kb, f"subjects[{index}]")
            if subject.workflow is not None:
                self._check_workflow(project, subject.workflow, f"subjects[{index}]")
        version, items = self.datasets.items(project, spec.dataset, spec.version)
        if len(items) * spec.repeat * len(spec.subjects) > MAX_SAMPLES:
            raise InvalidRequest(
                f"{len(items)} items x {spec.repeat} repeats x {len(spec.subjects)} subjects "
                f"is over {MAX_SAMPLES} calls; sample the dataset or repeat less",
                param="repeat",
            )
        scorer_info = [scorer.describe() for scorer in scorers]
        payloads = [
            (f"{item.id}#{r}", {"item_id": item.id, "repeat": r, "input": item.input,
                                "expected": item.expected, "context": item.context})
            for item in items
            for r in range(spec.repeat)
        ]  # fmt: skip
        runs = []
        for subject in spec.subjects:
            params = {
                "experiment": spec.name,
                "dataset": spec.dataset,
                "dataset_version": version,
                "subject": subject.model_dump(exclude_none=True),
                "subject_title": subject.title,
                "scorers": spec.scorers,
                "scorer_info": scorer_info,
                "repeat": spec.repeat,
                "label": spec.label,
            }
            runs.append(self.jobs.create(KIND, project, principal.key_id, params, payloads))
        self.wake()
        return runs

    def _check_kb(self, project: str, kb: str | dict[str, Any], field: str) -> None:
        """The subject's kb as a live request's is checked, and every base it names exists."""
        try:
            request = parse_request(kb)
        except InvalidRequest as error:
            raise InvalidRequest(f"{field}: {error.message}", param=f"{field}.{error.param}",
                                 code="invalid_kb") from None  # fmt: skip
        if self.kbs is None:
            raise InvalidRequest(f"{field}.kb: knowledge bases are not served here",
                                 param=f"{field}.kb", code="kb_not_found")  # fmt: skip
        known = self.kbs(project)
        for name in request.bases:
            if name not in known:
                raise NotFound(
                    f"{field}.kb: unknown knowledge base '{name}' (known: "
                    f"{', '.join(sorted(known)[:10]) or 'none'}); create it with 'keel kb "
                    "create' or POST /api/kbs",
                    param=f"{field}.kb",
                    code="kb_not_found",
                )

    def _check_workflow(self, project: str, name: str, field: str) -> None:
        known = self.workflows(project) if self.workflows is not None else []
        if name not in known:
            raise NotFound(
                f"{field}.workflow: unknown workflow '{name}' (known: "
                f"{', '.join(sorted(known)[:10]) or 'none'}); apply it with 'keel apply'",
                param=f"{field}.workflow",
                code="workflow_not_found",
            )

    # -- reading ---------------------------------------------------------------------------

    def get(self, project_id: str, run_id: str) -> Job:
        job = self.jobs.get(run_id, project_id)
        if job is None or job.kind != KIND:
            raise NotFound(
                f"no experiment run '{run_id}' in this project; list them with GET "
                "/api/experiments or 'keel eval list'",
                param="run",
                code="run_not_found",
            )
        return job

    def page(
        self, project_id: str, *, after: str | None = None, limit: int = 50
    ) -> tuple[list[Job], bool]:
        return self.jobs.page(project_id, kind=KIND, after=after, limit=limit)

    def newest(self, project_id: str, pages: int | None = None) -> Iterator[Job]:
        """The project's runs, newest first, read 200 at a time (at most `pages` reads)."""
        after: str | None = None
        read = 0
        while pages is None or read < pages:
            jobs, more = self.page(project_id, after=after, limit=200)
            read += 1
            yield from jobs
            if not more or not jobs:
                return
            after = jobs[-1].id

    def resolve(self, project_id: str, reference: str) -> Job:
        """A run by id, or the newest finished run with that label (or experiment name)."""
        if reference.startswith(f"{KIND}_"):
            return self.get(project_id, reference)
        for job in self.newest(project_id):
            if job.state == "succeeded" and reference in (
                job.params.get("label"),
                job.params.get("experiment"),
            ):
                return job
        raise NotFound(
            f"no finished run labelled '{reference}' and no run with that id; give a run id "
            "(keel eval list) or the label of a finished run",
            param="baseline",
            code="run_not_found",
        )

    def run(self, job: Job) -> Run:
        items = self.jobs.items(job.id, ["done", "failed"])
        scorers = list(job.params.get("scorer_info", []))
        summary = job.result.get("summary") or summarise(scorers, items)
        return Run(job.id, run_title(job), job.params.get("label"), job.state, scorers,
                   summary, collect(items))  # fmt: skip

    def compare(
        self, project_id: str, references: Sequence[str], confidence: float = 0.95
    ) -> dict[str, Any]:
        if len(references) < 2:
            raise InvalidRequest("compare needs two runs or more: baseline first", param="runs")
        _confidence(confidence)
        runs = [self.run(self.resolve(project_id, ref)) for ref in references]
        return compare(runs, confidence)

    def gates(
        self,
        project_id: str,
        run_id: str,
        gates: Sequence[str],
        baseline: str | None,
        confidence: float = 0.95,
    ) -> list[GateResult]:
        _confidence(confidence)
        parsed = [parse_gate(text, index) for index, text in enumerate(gates)]
        candidate = self.run(self.get(project_id, run_id))
        base = self.run(self.resolve(project_id, baseline)) if baseline else None
        results = []
        for gate in parsed:
            found = None
            if gate.delta and base is not None:
                found = difference(base, candidate, gate.metric, confidence)
            results.append(check(gate, candidate.summary, found, base is not None))
        return results


def _confidence(value: float) -> None:
    if not 0.5 <= value < 1:
        raise InvalidRequest(
            f"confidence {value} is out of range; use a level such as 0.9, 0.95 or 0.99",
            param="confidence",
        )
