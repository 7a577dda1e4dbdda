"""Experiments: a dataset version run against subjects (a model or route, a prompt version or
label, sampling parameters, a knowledge-base configuration, or a workflow) and scored, as jobs
of kind `experiment` — one job, a *run*, per subject. Each item is one call through
`Gateway.handle` (a RAG call when the subject names a `kb`), traced with the run and item in
its metadata, or one run of the subject's workflow, whose llm steps call it in turn;
`repeat` keeps every sample.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.auth.keys import Principal
from keel.calls import Call
from keel.cost import cost
from keel.embeddings.base import Embedder
from keel.errors import BudgetExceeded, KeelError, RateLimited
from keel.evals.scorers import Deps, Observation, Scorer, build_scorers
from keel.evals.summary import summarise
from keel.gateway.answer import Answer
from keel.gateway.pipeline import Gateway
from keel.jobs.batch import trace_id
from keel.jobs.executor import Finish, ItemFailed
from keel.jobs.model import Item, Job
from keel.jobs.store import JobStore
from keel.providers.base import Usage
from keel.routing.table import Target
from keel.workflows.spec import NAME_PATTERN, WORKFLOW_PREFIX

KIND = "experiment"
_RETRYABLE = {429, 500, 502, 503, 504}
# An experiment measures its subject, never the response cache: its calls neither read nor
# fill it.
NO_CACHE = {"x-keel-cache": "bypass"}
_FIXED = ("model", "messages", "prompt", "prompt_variables", "stream", "n", "kb")
# (principal, workflow name, item input, trace id) → the run's output as text
WorkflowRunner = Callable[[Principal, str, dict[str, Any], str], Awaitable[str]]


class Subject(BaseModel):
    """What answers the items: a model or route, a stored prompt, or both, optionally with
    a knowledge base to retrieve from (`kb`); or a workflow."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=100, description="How reports call it")
    model: str | None = Field(None, min_length=1, max_length=200, description="Model or route")
    prompt: str | None = Field(
        None, max_length=200, description="NAME, NAME@LABEL or NAME@VERSION of a stored prompt"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Request fields: temperature, max_tokens, seed, …"
    )
    kb: str | dict[str, Any] | None = Field(
        None,
        description="A knowledge-base configuration, as a chat request's `kb` field: a base "
        'name, or {"name": "handbook", "top_k": 4, "mode": "hybrid", …}. Each item is a RAG '
        "call: the model answers from the retrieved passages",
    )
    workflow: str | None = Field(
        None,
        max_length=100,
        description="A workflow by name (or model 'workflow:NAME'): each item is one run, "
        "its input the item's variables or last user message, its output the answer",
    )

    @model_validator(mode="after")
    def _something(self) -> Subject:
        if self.model is not None and self.model.startswith(WORKFLOW_PREFIX):
            if self.workflow is not None:
                raise ValueError("name the workflow once: workflow: NAME or model: workflow:NAME")
            self.workflow, self.model = self.model.removeprefix(WORKFLOW_PREFIX), None
        if self.workflow is not None:
            if not re.fullmatch(NAME_PATTERN, self.workflow):
                raise ValueError(f"workflow {self.workflow[:100]!r} is not a workflow name "
                                 "(letters, digits, '.', '_' and '-')")  # fmt: skip
            others = [f for f in ("model", "prompt", "kb") if getattr(self, f) is not None]
            if others or self.params:
                raise ValueError(
                    f"a workflow subject runs the workflow as declared; drop "
                    f"{', '.join(others + ['params'] * bool(self.params))} (set models and "
                    "parameters in the workflow's steps)"
                )
            return self
        if self.model is None and self.prompt is None:
            message = "a subject needs a model (or route) or a prompt"
            if self.kb is not None:
                message += " to answer from the knowledge base's passages"
            raise ValueError(message)
        fixed = sorted(set(self.params) & set(_FIXED))
        if fixed:
            raise ValueError(f"params may not set {fixed}: the subject and items decide them")
        return self

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        if self.workflow is not None:
            return f"{WORKFLOW_PREFIX}{self.workflow}"
        kb = self.kb if isinstance(self.kb, str) or self.kb is None else _kb_names(self.kb)
        return " ".join(part for part in (self.prompt and f"prompt:{self.prompt}",
                                          self.model, kb and f"kb:{kb}") if part)  # fmt: skip


def _kb_names(kb: dict[str, Any]) -> str:
    names = kb.get("names") if "names" in kb else [kb.get("name")]
    return "+".join(str(name) for name in names or [] if name) if isinstance(names, list) else ""


class ExperimentSpec(BaseModel):
    """An experiment as `keel eval run -f eval.yaml` or POST /api/experiments sends it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    dataset: str = Field(min_length=1, max_length=100)
    version: int | None = Field(None, ge=1, description="Dataset version (default: latest)")
    subjects: list[Subject] = Field(min_length=1, max_length=20)
    scorers: list[dict[str, Any]] = Field(min_length=1, max_length=30)
    repeat: int = Field(1, ge=1, le=50, description="Samples per item")
    label: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Names the runs for "
        "later use as a baseline (--baseline LABEL picks the newest run with it)",
    )  # fmt: skip


def request_body(subject: dict[str, Any], item_input: dict[str, Any]) -> dict[str, Any]:
    """The chat request for one item: the subject's prompt and model, the item's messages or
    variables, the subject's parameters and knowledge base."""
    body: dict[str, Any] = dict(subject.get("params") or {})
    if subject.get("kb") is not None:
        body["kb"] = subject["kb"]
    prompt = subject.get("prompt")
    model = subject.get("model")
    if prompt:
        body["model"] = f"prompt:{prompt}"
        if model:
            body = {**body, "model": model, "prompt": _prompt_ref(prompt)}
        if "variables" in item_input:
            if "prompt" in body:
                body["prompt"]["variables"] = item_input["variables"]
            else:
                body["prompt_variables"] = item_input["variables"]
        if "messages" in item_input:
            body["messages"] = item_input["messages"]
        return body
    body["model"] = model
    if "messages" in item_input:
        body["messages"] = item_input["messages"]
    else:  # variables without a prompt: one user message listing them
        text = "\n".join(f"{k}: {v}" for k, v in item_input["variables"].items())
        body["messages"] = [{"role": "user", "content": text}]
    return body


def _prompt_ref(prompt: str) -> dict[str, Any]:
    name, _, pointer = prompt.partition("@")
    ref: dict[str, Any] = {"name": name}
    if pointer.isdigit():
        ref["version"] = int(pointer)
    elif pointer:
        ref["label"] = pointer
    return ref


def answer_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content = message.get("content")
    return content if isinstance(content, str) else str(choices[0].get("text") or "")


def output_text(output: Any) -> str:
    """A workflow's output as the answer scorers read: text as it is, a lone `text` or an
    `answer` field, anything else as JSON."""
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        for field in ("text", "answer"):
            if isinstance(output.get(field), str) and (field == "answer" or len(output) == 1):
                return str(output[field])
    return orjson.dumps(output).decode()


class ExperimentKind:
    """Runs one item of a run: the subject's call, then every scorer on its answer."""

    name = KIND

    def __init__(
        self,
        gateway: Gateway,
        store: JobStore,
        principal_of: Callable[[str], Awaitable[Principal | None]],
        embedder: Callable[[], Embedder | None],
        target_of: Callable[[str, str], Target | None] = lambda _project, _ref: None,
        workflow: WorkflowRunner | None = None,
    ):
        self.target_of = target_of  # (project, model version ref) → its prices
        self.workflow = workflow
        self.gateway = gateway
        self.store = store
        self.principal_of = principal_of
        self.embedder = embedder
        self._scorers: dict[str, list[Scorer]] = {}

    async def _principal(self, job: Job) -> Principal:
        principal = await self.principal_of(job.key_id)
        if principal is None:
            raise ItemFailed({"code": "invalid_api_key", "message": "the key that started this "
                              "experiment is revoked or expired; start it again"})  # fmt: skip
        return principal

    def scorers(self, job: Job, principal: Principal) -> list[Scorer]:
        found = self._scorers.get(job.id)
        if found is None:

            async def chat(body: dict[str, Any], tags: dict[str, str]) -> str:
                call = Call("chat/completions", body, principal, trace_id(),
                            client_headers=NO_CACHE,
                            metadata={"experiment_run": job.id, **tags})  # fmt: skip
                answer = await self.gateway.handle(call)
                assert isinstance(answer, Answer)
                return answer_text(answer.body)

            deps = Deps(principal=principal, chat=chat, embedder=self.embedder)
            found = build_scorers(job.params["scorers"], deps, check=False)
            self._scorers[job.id] = found
        return found

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        principal = await self._principal(job)
        payload = item.payload
        request_id = trace_id()
        metadata = {
            "experiment": str(job.params.get("experiment", "")),
            "experiment_run": job.id,
            "dataset_item": str(payload["item_id"]),
            "repeat": str(payload["repeat"]),
        }
        subject = job.params["subject"]
        if "workflow" in subject:
            return await self.run_workflow(job, principal, payload, request_id)
        body = request_body(subject, payload["input"])
        call = Call(
            "chat/completions",
            body,
            principal,
            request_id,
            client_headers=NO_CACHE,
            metadata=metadata,
        )
        started = time.perf_counter()
        try:
            answer = await self.gateway.handle(call)
        except KeelError as error:
            paced = isinstance(error, RateLimited) and not isinstance(error, BudgetExceeded)
            raise ItemFailed(
                {"status_code": error.status, "trace_id": request_id, **error.envelope()["error"]},
                retryable=error.status in _RETRYABLE and not isinstance(error, BudgetExceeded),
                retry_after=error.retry_after,
                paced=paced,
            ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        assert isinstance(answer, Answer)  # experiments never stream
        observation = Observation(
            output=answer_text(answer.body),
            expected=payload.get("expected"),
            input=payload["input"],
            context=payload.get("context"),
            latency_ms=latency_ms,
            cost=self.cost(principal.project_id, answer),
            trace_id=request_id,
            request=body,
        )
        return await self.result(job, principal, observation, payload, answer.body.get("usage"))

    async def run_workflow(
        self, job: Job, principal: Principal, payload: dict[str, Any], request_id: str
    ) -> dict[str, Any]:
        """One item as one run of the subject's workflow; the run's trace is the item's."""
        if self.workflow is None:
            raise ItemFailed({"code": "workflows_unavailable",
                              "message": "workflows are not served by this process"})  # fmt: skip
        name = str(job.params["subject"]["workflow"])
        started = time.perf_counter()
        try:
            output = await self.workflow(principal, name, payload["input"], request_id)
        except KeelError as error:
            raise ItemFailed(
                {"status_code": error.status, "trace_id": request_id, **error.envelope()["error"]},
                retryable=error.status in _RETRYABLE,
                retry_after=error.retry_after,
            ) from None
        latency_ms = (time.perf_counter() - started) * 1000
        observation = Observation(
            output=output,
            expected=payload.get("expected"),
            input=payload["input"],
            context=payload.get("context"),
            latency_ms=latency_ms,
            cost=None,  # each llm step's own trace has its cost
            trace_id=request_id,
            request=None,  # not a chat request: nothing for the bias probe to replay
        )
        return await self.result(job, principal, observation, payload, None)

    async def result(
        self,
        job: Job,
        principal: Principal,
        observation: Observation,
        payload: dict[str, Any],
        usage: dict[str, Any] | None,
    ) -> dict[str, Any]:
        scores = await self.score(job, principal, observation, payload)
        return {
            "item_id": payload["item_id"],
            "repeat": payload["repeat"],
            "trace_id": observation.trace_id,
            "output": observation.output,
            "latency_ms": round(observation.latency_ms or 0.0, 3),
            "usage": usage,
            "scores": scores,
        }

    def cost(self, project_id: str, answer: Answer) -> float | None:
        """What the call cost at its model version's prices; None when unknown."""
        target = self.target_of(project_id, answer.headers.get("X-Keel-Target", ""))
        usage = answer.body.get("usage") or {}
        if target is None or not isinstance(usage.get("prompt_tokens"), int):
            return None
        tokens = Usage(usage["prompt_tokens"], int(usage.get("completion_tokens") or 0))
        return cost(target, tokens)

    async def score(
        self, job: Job, principal: Principal, observation: Observation, payload: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        scores: dict[str, dict[str, Any]] = {}
        for scorer in self.scorers(job, principal):
            try:
                measured = await scorer.measure(observation)
                value, detail = measured.value, measured.detail
            except KeelError as error:  # a judge's call failed: no score, said why
                value, detail = None, f"scorer call failed: {error.message}"
            scores[scorer.metric] = {
                "value": value,
                "passed": scorer.passed(value),
                "detail": detail,
            }
        return scores

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        self._scorers.pop(job.id, None)
        items = await asyncio.to_thread(self.store.items, job.id, ["done", "failed"])
        summary = summarise(job.params.get("scorer_info", []), items)
        return Finish(result={"summary": summary})
