"""The engine: runs a compiled workflow's steps in order, each completed step's output
checkpointed before the next starts, so a run resumes where it stopped.

A step that has a `done` checkpoint is never run again: its saved output is used. Which
steps a branch skipped is decided again from saved outputs, so it needs no checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from keel.auth.keys import Principal
from keel.errors import KeelError
from keel.gateway.answer import EventStream
from keel.tracing.model import RequestTrace
from keel.workflows.compiled import CompiledStep, CompiledWorkflow
from keel.workflows.expr import ExpressionError
from keel.workflows.spans import INPUT, OUTPUT
from keel.workflows.store import Checkpoint

MAX_DEPTH = 8


class RunCancelled(Exception):
    """The run was cancelled between two steps."""


class StepFailed(Exception):
    """A step failed; `key` names it (resume starts there), `cause` says why."""

    def __init__(self, key: str, cause: BaseException):
        self.key = key
        self.cause = cause
        message = (
            cause.message if isinstance(cause, KeelError) else str(cause) or type(cause).__name__
        )
        super().__init__(f"step {key!r} failed: {message}")


@dataclass(slots=True)
class Result:
    output: Any
    tokens: int | None = None
    cost: float | None = None
    input: Any = None
    input_tokens: int | None = None  # prompt tokens of the step's model calls
    output_tokens: int | None = None  # completion tokens


class Executor(Protocol):
    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result: ...


Save = Callable[[Checkpoint], Awaitable[None]]


@dataclass(slots=True)
class RunState:
    """One execution of a run: who runs it, what is saved, where spans go."""

    run_id: str
    principal: Principal
    checkpoints: dict[str, Checkpoint]
    save: Save | None  # None: no checkpoints (the engine's floor, for benchmarks)
    trace: RequestTrace | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    stream_key: str | None = None  # the llm step that streams to the caller, if any
    stream: EventStream | None = None  # set by that step instead of an output
    depth: int = 0
    tokens: int = 0
    cost: float = 0.0


class Engine:
    def __init__(self, executors: dict[str, Executor]):
        self.executors = executors

    async def run(
        self, workflow: CompiledWorkflow, value: Any, run: RunState, prefix: str = ""
    ) -> Any:
        """The workflow's output; StepFailed, RunCancelled or (streaming) None with
        `run.stream` set when the last step streams."""
        scope: dict[str, Any] = {"input": value, "steps": {}}
        last = await self.steps(workflow.steps, scope, run, prefix, "request")
        if run.stream is not None:
            return None
        return self.finish(workflow, scope, last)

    @staticmethod
    def finish(workflow: CompiledWorkflow, scope: dict[str, Any], last: Any) -> Any:
        output = workflow.output(scope) if workflow.output is not None else last
        if workflow.output_schema is not None:
            problem = workflow.output_schema.problem(output)
            if problem is not None:
                raise StepFailed(
                    "output", ValueError(f"the output does not match output_schema {problem}")
                )
        return output

    async def steps(
        self,
        steps: list[CompiledStep],
        scope: dict[str, Any],
        run: RunState,
        prefix: str,
        parent: str,
    ) -> Any:
        outputs: dict[str, Any] = scope["steps"]
        skipped: set[str] = set()
        last: Any = None
        checkpoints = run.checkpoints
        trace = run.trace
        for step in steps:
            if run.cancel.is_set():
                raise RunCancelled()
            key = prefix + step.id
            saved = checkpoints.get(key)
            if saved is not None and saved.status == "done":
                outputs[step.id] = {"output": saved.output}
                last = saved.output
                if step.kind == "branch":
                    skipped |= _not_taken(step, saved.output)
                continue
            if step.id in skipped or (step.when is not None and not _true(step, scope)):
                outputs[step.id] = {"output": None}
                continue
            started = time.time_ns()
            span = trace.begin(f"workflow.{key}", parent) if trace is not None else None
            try:
                result = await self.executors[step.kind](step, scope, run, key)
                if step.output is not None and run.stream is None:
                    problem = step.output.problem(result.output)
                    if problem is not None:
                        raise ValueError(f"the output does not match output_schema {problem}")
            except (StepFailed, RunCancelled):
                if span is not None:
                    RequestTrace.end(span, RuntimeError())
                raise
            except Exception as exc:  # any failure of a step fails the run at that step
                if span is not None:
                    RequestTrace.end(span, exc)
                if run.save is not None:
                    await run.save(
                        Checkpoint(
                            key,
                            step.kind,
                            "failed",
                            None,
                            _describe(exc),
                            started // 1000,
                            time.time_ns() // 1000,
                        )
                    )
                raise StepFailed(key, exc) from exc
            if span is not None:
                RequestTrace.end(span)
                span.attributes = step_attributes(step.kind, result)
            if run.stream is not None:
                return None  # the last step streams: its checkpoint is saved at the end
            run.tokens += result.tokens or 0
            run.cost += result.cost or 0.0
            if run.save is not None:
                await run.save(
                    Checkpoint(
                        key,
                        step.kind,
                        "done",
                        result.output,
                        None,
                        started // 1000,
                        time.time_ns() // 1000,
                        result.input,
                        1,
                        result.tokens,
                        result.cost,
                    )
                )
            outputs[step.id] = {"output": result.output}
            last = result.output
            if step.kind == "branch":
                skipped |= _not_taken(step, result.output)
        return last


def step_attributes(kind: str, result: Result) -> dict[str, Any]:
    """A finished step's span attributes. Input and output stay Python values here: they
    become capped, redacted JSON once, as the run ends (spans.SpanContent), off the steps."""
    attributes: dict[str, Any] = {"keel.workflow.kind": kind, OUTPUT: result.output}
    if result.input is not None:
        attributes[INPUT] = result.input
    if result.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = result.input_tokens
        attributes["gen_ai.usage.output_tokens"] = result.output_tokens or 0
    elif result.tokens is not None:
        attributes["keel.tokens"] = result.tokens
    if result.cost is not None:
        attributes["keel.cost"] = result.cost
    return attributes


def _true(step: CompiledStep, scope: dict[str, Any]) -> bool:
    assert step.when is not None
    try:
        return bool(step.when(scope))
    except ExpressionError as exc:
        raise StepFailed(step.id, exc) from exc


def _not_taken(step: CompiledStep, output: Any) -> set[str]:
    cases = step.spec.body.cases
    every = {t for case in cases for t in case.then} | set(step.spec.body.else_)
    chosen = output.get("case") if isinstance(output, dict) else None
    if chosen == "else":
        return every - set(step.spec.body.else_)
    if isinstance(chosen, int) and 0 <= chosen < len(cases):
        return every - set(cases[chosen].then)
    return every


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeelError):
        return exc.message
    return str(exc) or type(exc).__name__
