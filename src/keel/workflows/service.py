"""The workflow service the server wires in: definitions, runs (sync, async, streamed),
resume and cancel, recovery of runs a dead process left, and retention.

A run holds a lease that its process renews; a run whose lease lapsed (its process was
killed) is claimed by the next process that looks and resumed from its checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from keel.auth.keys import Principal
from keel.errors import InvalidRequest, KeelError, NotFound
from keel.events import ChangeBus
from keel.gateway.pipeline import Gateway
from keel.store.db import Database
from keel.tracing.model import RequestTrace
from keel.workflows.agents import AgentRunner
from keel.workflows.compiled import CompiledWorkflow, compile_workflow
from keel.workflows.definitions import Definitions, Kind
from keel.workflows.engine import Engine, RunCancelled, RunState, StepFailed
from keel.workflows.expr import Compiler
from keel.workflows.runtime import Runtime
from keel.workflows.spans import Mask, SpanContent, mask_text, policy_mask
from keel.workflows.spec import WorkflowSpec
from keel.workflows.steps import executors
from keel.workflows.store import TERMINAL, Checkpoint, WorkflowStore, now_us, run_id
from keel.workflows.streaming import relay

log = logging.getLogger("keel.workflows")
PrincipalOf = Callable[[str], Awaitable[Principal | None]]
Sink = Callable[[RequestTrace], None]


class WorkflowFailed(KeelError):
    """A run stopped at a failed step: 422, naming the step and the run to resume."""

    status = 422
    type = "invalid_request_error"


@dataclass
class Streamed:
    """A run whose last llm step streams: relay `events`; the run completes at their end."""

    run: dict[str, Any]
    events: AsyncIterator[bytes]
    headers: dict[str, str]


class Workflows:
    def __init__(
        self,
        database: Database,
        gateway: Gateway,
        *,
        principal_of: PrincipalOf,
        trace_sink: Sink | None = None,
        knowledge: Callable[[], Any] = lambda: None,
        guard: Any = None,
        lease_s: float = 10.0,
        recover_interval: float = 2.0,
        max_age_s: float | None = None,
        max_runs: int | None = None,
        checkpoints: bool = True,
        events: ChangeBus | None = None,
        trace_content: bool = True,
    ) -> None:
        self.store = WorkflowStore(database)
        self.compiler = Compiler()
        self.definitions = Definitions(self.store, self.compiler, events)
        self.runtime = Runtime(
            gateway,
            knowledge,
            guard,
            self.definitions.workflow,
            self.definitions.agent,
            dict(os.environ),
        )
        self.engine = Engine(executors(self.runtime))
        self.runtime.engine = self.engine
        self.runtime.run_agent = AgentRunner(self.runtime)
        self.principal_of = principal_of
        self.trace_sink = trace_sink
        self.lease_s, self.recover_interval = lease_s, recover_interval
        self.max_age_s, self.max_runs = max_age_s, max_runs
        self.checkpoints = checkpoints
        self.trace_content = trace_content  # the trace_content setting, for span payloads
        self._running: dict[str, RunState] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._agent_wrappers: dict[str, CompiledWorkflow] = {}
        # Called with a run's record when a cancel of it is asked (jobs.py: its job's cancel).
        self.cancel_hooks: list[Callable[[dict[str, Any]], Awaitable[None]]] = []
        # Called every 30 s by the maintenance loop (jobs.py: runs whose job ended early).
        self.maintain_hooks: list[Callable[[], Awaitable[object]]] = []
        self._masks: weakref.WeakKeyDictionary[Any, Mask | None] = weakref.WeakKeyDictionary()

    # -- lifecycle

    def start(self) -> None:
        self._loop = asyncio.create_task(self._maintain())

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runtime.close()
        self.store.close()

    async def _maintain(self) -> None:
        """Renew this process's leases, notice cancels, resume orphans, apply retention."""
        last_prune = last_hooks = 0.0
        while True:
            try:
                now = time.time()
                held = list(self._running)
                await asyncio.to_thread(self.store.renew, held, now + self.lease_s)
                for run in held:
                    if await asyncio.to_thread(self.store.cancel_requested, run):
                        state = self._running.get(run)
                        if state is not None:
                            state.cancel.set()
                for run in await asyncio.to_thread(self.store.orphans, now):
                    if run not in self._running:
                        self._spawn(self._recover(run))
                if (self.max_age_s or self.max_runs) and now - last_prune > 60:
                    last_prune = now
                    await self.prune()
                if now - last_hooks > 30:
                    last_hooks = now
                    for hook in self.maintain_hooks:
                        await hook()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is down: try again next round, runs go on
                log.exception("workflow maintenance failed; retrying")
            await asyncio.sleep(self.recover_interval)

    async def prune(self) -> int:
        before = now_us() - int(self.max_age_s * 1e6) if self.max_age_s else None
        return await asyncio.to_thread(self.store.prune, before_us=before, keep=self.max_runs)

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(_quiet(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- definitions (blocking: call from a thread)

    def put(
        self,
        project_id: str,
        kind: Kind,
        data: Any,
        message: str = "",
        also: dict[str, set[str]] | None = None,
    ) -> dict[str, Any]:
        return self.definitions.put(project_id, kind, data, message, also)

    # -- runs

    async def compiled(self, project_id: str, kind: Kind, name: str) -> CompiledWorkflow:
        if kind == "workflow":
            return await self.definitions.workflow(project_id, name)
        await self.definitions.agent(project_id, name)  # NotFound when there is none
        found = self._agent_wrappers.get(name)
        if found is None:
            spec = WorkflowSpec.model_validate(
                {
                    "name": name,
                    "input": {
                        "type": "object",
                        "properties": {"text": {"type": "string"}},
                        "required": ["text"],
                    },
                    "steps": [
                        {"id": "agent", "agent": {"name": name, "input": "{{ input.text }}"}}
                    ],
                }
            )
            found = self._agent_wrappers[name] = compile_workflow(spec, 1, self.compiler)
        return found

    async def run(
        self,
        principal: Principal,
        kind: Kind,
        name: str,
        value: Any,
        *,
        wait: bool = True,
        stream: bool = False,
        trace_id: str = "",
    ) -> dict[str, Any] | Streamed:
        """Start a run: its record when it ended (wait) or started; a Streamed for stream."""
        row, workflow = await self.new_run(principal, kind, name, value, trace_id=trace_id)
        work = self._execute(row, workflow, principal, {}, stream)
        if stream or wait:
            return await work
        self._spawn(work)
        return public(row)

    async def new_run(
        self,
        principal: Principal,
        kind: Kind,
        name: str,
        value: Any,
        *,
        trace_id: str = "",
        lease_until: float | None = None,
    ) -> tuple[dict[str, Any], CompiledWorkflow]:
        """A run's record, stored (its input checked first), and the workflow it runs."""
        workflow = await self.compiled(principal.project_id, kind, name)
        workflow.input.check(value, f"the input of {kind} {name!r}")
        row = {
            "id": run_id(),
            "project_id": principal.project_id,
            "key_id": principal.key_id,
            "kind": kind,
            "workflow": name,
            "version": workflow.version,
            "status": "running",
            "input": value,
            "output": None,
            "error": None,
            "failed_step": None,
            "trace_id": None,
            "cancel_requested": False,
            "lease_until": lease_until or time.time() + self.lease_s,
            "created_us": now_us(),
            "updated_us": now_us(),
        }
        if self.trace_sink is not None:  # the caller's request id, when it has one
            row["trace_id"] = trace_id or _trace_id()
        if self.checkpoints:
            await asyncio.to_thread(self.store.create_run, row)
        row["first_trace"] = row["trace_id"]
        return row, workflow

    def state(
        self, row: dict[str, Any], principal: Principal, saved: dict[str, Checkpoint]
    ) -> RunState:
        """One execution of the run `row`, from its checkpoints `saved`, traced."""
        save = self._saver(row["id"]) if self.checkpoints else None
        return RunState(row["id"], principal, saved, save, self._trace(row, principal))

    async def resume(self, principal: Principal, run: str, *, wait: bool) -> dict[str, Any]:
        row = await self._own(principal, run)
        if row["status"] not in ("failed", "cancelled"):
            raise InvalidRequest(
                f"run {run} is {row['status']}; only a failed or cancelled run can be resumed",
                param="run_id",
            )
        await asyncio.to_thread(self.store.forget_failed, run)
        await asyncio.to_thread(
            self.store.update_run,
            run,
            status="running",
            error=None,
            failed_step=None,
            cancel_requested=False,
            lease_until=time.time() + self.lease_s,
        )
        row.update(status="running", error=None, failed_step=None)
        work = self._continue(row, principal)
        if wait:
            result = await work
            assert isinstance(result, dict)
            return result
        self._spawn(work)
        return public(row)

    async def resume_driven(
        self, row: dict[str, Any], principal: Principal, state: RunState
    ) -> dict[str, Any]:
        """Run a job-driven run to its end from its checkpoints, in `state` (its trace),
        under a lease of its own from now on, like any run."""
        await asyncio.to_thread(
            self.store.update_run, row["id"], lease_until=time.time() + self.lease_s
        )
        result = await self._continue(row, principal, state)
        assert isinstance(result, dict)
        return result

    async def cancel(self, principal: Principal, run: str) -> dict[str, Any]:
        row = await self._own(principal, run)
        if row["status"] in TERMINAL:
            raise InvalidRequest(f"run {run} is {row['status']} already", param="run_id")
        await asyncio.to_thread(self.store.update_run, run, cancel_requested=True)
        state = self._running.get(run)
        if state is not None:
            state.cancel.set()
        row["cancel_requested"] = True
        for hook in self.cancel_hooks:  # a job that drives the run stops starting items
            await hook(row)
        return public(row)

    async def get(self, project_id: str, run: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.store.run, run)
        if row is None or row["project_id"] != project_id:
            raise NotFound(f"no run {run!r} in this project", param="run_id")
        steps = await asyncio.to_thread(self.store.checkpoints, run)
        return {**public(row), "steps": [_step(c) for c in steps.values()]}

    async def _own(self, principal: Principal, run: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self.store.run, run)
        if row is None or row["project_id"] != principal.project_id:
            raise NotFound(f"no run {run!r} in this project", param="run_id")
        return row

    async def _recover(self, run: str) -> None:
        if not await asyncio.to_thread(
            self.store.claim, run, time.time() + self.lease_s, time.time()
        ):
            return
        row = await asyncio.to_thread(self.store.run, run)
        assert row is not None
        principal = await self.principal_of(row["key_id"])
        if principal is None:
            await asyncio.to_thread(
                self.store.update_run,
                run,
                status="failed",
                error="the key that started this run is revoked",
            )
            return
        log.info("resuming workflow run %s after its process stopped", run)
        await self._continue(row, principal)

    async def _continue(
        self, row: dict[str, Any], principal: Principal, state: RunState | None = None
    ) -> Any:
        kind: Kind = "agent" if row["kind"] == "agent" else "workflow"
        # The newest version: a run that failed resumes with the fix applied since.
        workflow = await self.compiled(row["project_id"], kind, row["workflow"])
        if workflow.version != row["version"]:
            row["version"] = workflow.version
            await asyncio.to_thread(self.store.update_run, row["id"], version=workflow.version)
        saved = await asyncio.to_thread(self.store.checkpoints, row["id"])
        if state is not None:
            state.checkpoints = saved
        return await self._execute(row, workflow, principal, saved, False, state)

    async def _execute(
        self,
        row: dict[str, Any],
        workflow: CompiledWorkflow,
        principal: Principal,
        saved: dict[str, Checkpoint],
        stream: bool,
        state: RunState | None = None,
    ) -> dict[str, Any] | Streamed:
        run = row["id"]
        if state is None:
            state = self.state(row, principal, saved)
        trace = state.trace
        if stream:
            last = workflow.steps[-1]
            if last.kind == "llm" and last.spec.body.schema_ is None and workflow.output is None:
                state.stream_key = last.id
        if trace is not None and trace.trace_id != row["trace_id"] and self.checkpoints:
            await asyncio.to_thread(self.store.update_run, run, trace_id=trace.trace_id)
        row["trace_id"] = trace.trace_id if trace is not None else None
        self._running[run] = state
        handed_over = False
        try:
            output = await self.engine.run(workflow, row["input"], state)
            if state.stream is not None:
                handed_over = True
                events = relay(state.stream.events, lambda text: self._streamed(row, state, text))
                return Streamed(public(row), events, state.stream.headers)
            await self.end(row, state, "succeeded", output=output)
        except StepFailed as exc:
            if state.cancel.is_set():  # it failed because it was being cancelled
                await self.end(row, state, "cancelled", error="cancelled")
                return public(row)
            await self.end(row, state, "failed", error=str(exc), step=exc.key)
            raise WorkflowFailed(
                f"{exc}; fix the cause and resume it: POST /api/workflow-runs/{run}/resume",
                code="workflow_step_failed",
            ) from None
        except RunCancelled:
            await self.end(row, state, "cancelled", error="cancelled")
        except KeelError as exc:
            await self.end(row, state, "failed", error=exc.message)
            raise
        finally:
            if not handed_over:
                self._running.pop(run, None)
        return public(row)

    async def _streamed(self, row: dict[str, Any], state: RunState, text: str | None) -> None:
        """The streamed last step ended: checkpoint it and end the run (None: cut short)."""
        try:
            if text is None:
                await self.end(
                    row, state, "failed", error="the stream was cut short", step=state.stream_key
                )
                return
            assert state.stream_key is not None
            if state.save is not None:
                stamp = now_us()
                await state.save(
                    Checkpoint(state.stream_key, "llm", "done", {"text": text}, None, stamp, stamp)
                )
            await self.end(row, state, "succeeded", output={"text": text})
        finally:
            self._running.pop(row["id"], None)

    async def end(
        self,
        row: dict[str, Any],
        state: RunState,
        status: str,
        *,
        output: Any = None,
        error: str | None = None,
        step: str | None = None,
    ) -> None:
        row.update(status=status, output=output, error=error, failed_step=step)
        trace = state.trace
        if trace is not None:
            trace.output = _text(output)
            # On the run's root span: which version ran, and the tokens of all its calls
            # (each call's own trace has its split and cost).
            trace.metadata["workflow_version"] = str(row["version"])
            trace.metadata["workflow_tokens"] = str(state.tokens)
            trace.metadata["workflow_cost"] = f"{state.cost:.9g}"
            content = SpanContent(self.trace_content, await self._mask(state.principal))
            try:
                if content.slow:
                    await asyncio.to_thread(content.render, trace)
                else:
                    content.render(trace)
            except Exception:  # a scanner failed: keep no payload rather than an unmasked one
                log.exception("workflow run %s: span payloads dropped", row["id"])
                SpanContent.drop(trace)
            trace.finish(WorkflowFailed(error or "failed") if status == "failed" else None)
        if self.checkpoints:
            await asyncio.to_thread(
                self.store.update_run,
                row["id"],
                status=status,
                output=output,
                error=error,
                failed_step=step,
                lease_until=0.0,
            )

    async def _mask(self, principal: Principal) -> Mask | None:
        """The guard's masking for span payloads when the policy that covers the run's
        caller (the one a guard step without `policy` runs) takes out PII or secrets."""
        guard = self.runtime.guard
        if guard is None:
            return None
        try:
            policy = await guard.policy_for(principal, "workflow", {})
        except KeelError:  # the policy cannot be built: keep nothing it might have hidden
            return mask_text
        if policy is None:
            return None
        if policy not in self._masks:  # built once per policy version (policies are cached)
            self._masks[policy] = policy_mask(policy)
        return self._masks[policy]

    def _saver(self, run: str) -> Callable[[Checkpoint], Awaitable[None]]:
        store = self.store

        async def save(checkpoint: Checkpoint) -> None:
            await asyncio.to_thread(store.save, run, checkpoint)

        return save

    def _trace(self, row: dict[str, Any], principal: Principal) -> RequestTrace | None:
        if self.trace_sink is None:
            return None
        start = time.time_ns()
        trace_id = row.pop("first_trace", None) or _trace_id(start)
        body = {"model": f"{row['kind']}:{row['workflow']}", "input": row["input"]}
        return RequestTrace(
            self.trace_sink,
            trace_id,
            "workflow",
            principal,
            body,
            start_ns=start,
            metadata={"workflow_run": row["id"]},
        )


def _trace_id(start_ns: int | None = None) -> str:
    """An id of the shape the server gives a request: its start in ms, then random."""
    start = start_ns or time.time_ns()
    return f"{start // 1_000_000:012x}{os.urandom(10).hex()}"


async def _quiet(work: Awaitable[Any]) -> Any:
    """A background run: its failure is in its record already, not for the event loop."""
    try:
        return await work
    except KeelError:
        return None
    except Exception:
        log.exception("workflow run failed unexpectedly")
        return None


def _text(output: Any) -> str | None:
    if output is None:
        return None
    if isinstance(output, dict) and set(output) == {"text"}:
        return str(output["text"])
    import orjson

    return output if isinstance(output, str) else orjson.dumps(output).decode()


def _head(row: dict[str, Any]) -> dict[str, Any]:
    """A run's fields shared by its full form and its list summary."""
    return {
        "id": row["id"],
        "object": "workflow.run",
        "kind": row["kind"],
        "workflow": row["workflow"],
        "version": row["version"],
        "status": row["status"],
        "error": row.get("error"),
        "failed_step": row.get("failed_step"),
        "trace_id": row.get("trace_id"),
        "created_at": row["created_us"] // 1_000_000,
    }


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A run as the API returns it, with its input and output."""
    return {**_head(row), "input": row["input"], "output": row.get("output")}


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """A run as run lists show it: no input or output, and how long it has taken."""
    return {**_head(row), "duration_ms": round((row["updated_us"] - row["created_us"]) / 1000, 1)}


def _step(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "key": checkpoint.key,
        "kind": checkpoint.kind,
        "status": checkpoint.status,
        "input": checkpoint.input,
        "output": checkpoint.output,
        "error": checkpoint.error,
        "tokens": checkpoint.tokens,
        "cost": checkpoint.cost,
        "started_us": checkpoint.started_us,
        "duration_ms": round((checkpoint.ended_us - checkpoint.started_us) / 1000, 3),
    }


Mode = Literal["sync", "async"]
