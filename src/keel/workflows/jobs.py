"""A workflow run driven as a job (`workflow.run`): one job item per item of the workflow's
first top-level map, so a large map has the job system's progress (done/total), retries,
cancel and takeover after a crash, while the run keeps its own checkpoints.

Creating the job runs the steps before the map (checkpointed), so the map's list is known;
each job item runs the map's steps for one list item under the run's checkpoint keys
(`map[i].step`), at most the map's `concurrency` at a time; when every item has ended, the
job's finish resumes the run as any resume does: done steps and items are read back, the
steps after the map run. The run holds no lease of its own while its job drives it: the
job's lease decides who works on it. The run keeps its job's id as a checkpoint (`#job`),
so a cancel of the run cancels its job, and the run's steps list names the job.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from keel.auth.keys import Principal
from keel.errors import InvalidRequest, KeelError
from keel.jobs.executor import Finish, ItemFailed
from keel.jobs.model import Item, Job
from keel.jobs.store import JobStore
from keel.tracing.model import RequestTrace, Step
from keel.workflows.compiled import CompiledStep, CompiledWorkflow
from keel.workflows.engine import RunCancelled, RunState, StepFailed
from keel.workflows.service import WorkflowFailed, Workflows, public
from keel.workflows.store import Checkpoint, now_us

KIND = "workflow.run"
# The lease of a run its job drives: never lapses, so no other replica resumes it alone.
DRIVEN_BY_JOB = 1e15
CANCEL_CHECK_S = 0.5
JOB_KEY = "#job"  # a checkpoint no step can have (step ids are letters, digits and _)


@dataclass
class _Driving:
    """What this process knows of a run its job drives: the run's state and map list."""

    row: dict[str, Any]
    principal: Principal
    workflow: CompiledWorkflow
    step: CompiledStep
    state: RunState
    scope: dict[str, Any]
    items: list[Any]
    gate: asyncio.Semaphore
    span: Step | None = None
    checked: float = field(default_factory=time.monotonic)


def first_map(workflow: CompiledWorkflow, name: str) -> int:
    for index, step in enumerate(workflow.steps):
        if step.kind == "map":
            return index
    raise InvalidRequest(
        f"workflow {name!r} has no top-level map step; a job runs one item per map item, "
        "so run it with mode sync or async instead",
        param="mode",
    )


class WorkflowJobs:
    """The `workflow.run` job kind, and how such jobs are created."""

    name = KIND

    def __init__(self, flows: Workflows, store: JobStore, wake: Any = None):
        self.flows, self.store, self.wake = flows, store, wake
        self._driving: dict[str, _Driving] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        flows.cancel_hooks.append(self._cancel_run)
        flows.maintain_hooks.append(self.reconcile)

    async def submit(self, principal: Principal, name: str, value: Any) -> dict[str, Any]:
        """Store the run and its job (queued); the run record with its `job_id`."""
        flows = self.flows
        workflow = await flows.compiled(principal.project_id, "workflow", name)
        index = first_map(workflow, name)  # before anything is stored
        row, workflow = await flows.new_run(
            principal, "workflow", name, value, lease_until=DRIVEN_BY_JOB
        )
        driving = await self._prepare(row, principal, workflow, index)
        step = driving.step
        count = len(driving.items)
        job = await asyncio.to_thread(
            self.store.create,
            KIND,
            principal.project_id,
            principal.key_id,
            {"run_id": row["id"], "workflow": name, "map": step.id},
            [(f"{step.id}[{i}]", {"index": i}) for i in range(count)],
            f"run {row['id']} of workflow {name!r}: map {step.id!r} over {count} items",
        )
        self._driving[job.id] = driving
        stamp = now_us()
        link = Checkpoint(JOB_KEY, "job", "done", {"job_id": job.id}, None, stamp, stamp)
        await asyncio.to_thread(flows.store.save, row["id"], link)
        if self.wake is not None:
            self.wake()
        return {**public(row), "job_id": job.id}

    async def _prepare(
        self, row: dict[str, Any], principal: Principal, workflow: CompiledWorkflow, index: int
    ) -> _Driving:
        """The steps before the map (run, or read back from checkpoints) and its list."""
        flows = self.flows
        saved = await asyncio.to_thread(flows.store.checkpoints, row["id"])
        state = flows.state(row, principal, saved)
        scope: dict[str, Any] = {"input": row["input"], "steps": {}}
        try:
            await flows.engine.steps(workflow.steps[:index], scope, state, "", "request")
            step = workflow.steps[index]
            items = step.values["over"](scope)
        except StepFailed as exc:
            await flows.end(row, state, "failed", error=str(exc), step=exc.key)
            raise WorkflowFailed(str(exc), code="workflow_step_failed") from None
        spec = step.spec.body
        problem = None
        if not isinstance(items, list):
            problem = f"map over {spec.over!r} gave {type(items).__name__}, not a list"
        elif len(items) > spec.max_items:
            problem = f"map over {len(items)} items; max_items is {spec.max_items}"
        if problem is not None:
            await flows.end(row, state, "failed", error=problem, step=step.id)
            raise InvalidRequest(problem, param="input")
        span = None
        if state.trace is not None:
            span = state.trace.begin(f"workflow.{step.id}")
            span.attributes = {"keel.workflow.kind": "map", "keel.items": len(items)}
            if state.trace.trace_id != row["trace_id"]:
                row["trace_id"] = state.trace.trace_id
                await asyncio.to_thread(flows.store.update_run, row["id"], trace_id=row["trace_id"])
        gate = asyncio.Semaphore(spec.concurrency)
        return _Driving(row, principal, workflow, step, state, scope, items, gate, span)

    async def _driving_of(self, job: Job) -> _Driving:
        """This process's state of the job's run, rebuilt from the store after a takeover."""
        found = self._driving.get(job.id)
        if found is not None:
            return found
        lock = self._locks.setdefault(job.id, asyncio.Lock())
        async with lock:
            found = self._driving.get(job.id)
            if found is None:
                flows = self.flows
                row = await asyncio.to_thread(flows.store.run, job.params["run_id"])
                if row is None:
                    raise ItemFailed({"message": f"run {job.params['run_id']} is gone"})
                principal = await flows.principal_of(row["key_id"])
                if principal is None:
                    raise ItemFailed({"message": "the key that started this run is revoked"})
                workflow = await flows.compiled(row["project_id"], "workflow", row["workflow"])
                index = first_map(workflow, row["workflow"])
                found = self._driving[job.id] = await self._prepare(row, principal, workflow, index)
        return found

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        driving = await self._driving_of(job)
        await self._check_cancel(job, driving)
        index = int(item.payload["index"])
        step, scope, state = driving.step, driving.scope, driving.state
        inner = {**scope, "item": driving.items[index], "index": index,
                 "steps": dict(scope["steps"])}  # fmt: skip
        async with driving.gate:
            try:
                await self.flows.engine.steps(
                    step.inner, inner, state, f"{step.id}[{index}].", f"workflow.{step.id}"
                )
            except RunCancelled:  # the run's cancel came while this item was under way
                cancelled = {"message": "the run was cancelled", "code": "cancelled"}
                raise ItemFailed(cancelled) from None
            except StepFailed as exc:
                cause = exc.cause
                retry = isinstance(cause, KeelError) and cause.status >= 500
                raise ItemFailed({"message": str(exc), "step": exc.key}, retryable=retry) from None
        return {"index": index}

    async def _check_cancel(self, job: Job, driving: _Driving) -> None:
        """A cancel asked of the run (not its job) cancels the job: no item starts after."""
        now = time.monotonic()
        if now - driving.checked < CANCEL_CHECK_S and not driving.state.cancel.is_set():
            return
        driving.checked = now
        run = driving.row["id"]
        if driving.state.cancel.is_set() or await asyncio.to_thread(
            self.flows.store.cancel_requested, run
        ):
            driving.state.cancel.set()
            await asyncio.to_thread(self.store.request_cancel, job.id)
            raise ItemFailed({"message": f"run {run} was cancelled", "code": "cancelled"})

    async def _cancel_run(self, row: dict[str, Any]) -> None:
        """A cancel asked of a run its job drives: the job is cancelled too. A job that had
        waiting for a worker is cancelled at once and will never finish: the run ends here."""
        saved = await asyncio.to_thread(self.flows.store.checkpoints, row["id"])
        link = saved.get(JOB_KEY)
        if link is None:
            return
        job = await asyncio.to_thread(self.store.request_cancel, link.output["job_id"])
        if job is not None and job.state == "cancelled":
            await asyncio.to_thread(
                self.flows.store.update_run, row["id"], status="cancelled", error="cancelled"
            )
            row.update(status="cancelled", error="cancelled")

    async def reconcile(self) -> int:
        """End the runs whose job ended without finishing them (a job cancelled before any
        worker took it never finishes): as their job did. Returns how many were ended."""
        flows, ended = self.flows, 0
        for run in await asyncio.to_thread(flows.store.leased_past, DRIVEN_BY_JOB):
            saved = await asyncio.to_thread(flows.store.checkpoints, run)
            link = saved.get(JOB_KEY)
            if link is None:  # its job is still being created (the steps before the map)
                continue
            job = await asyncio.to_thread(self.store.get, link.output["job_id"])
            if job is not None and not job.final:
                continue
            status = job.state if job is not None and job.state != "succeeded" else "failed"
            error = "cancelled" if status == "cancelled" else "its job ended without it"
            await asyncio.to_thread(flows.store.update_run, run, status=status, error=error)
            ended += 1
        return ended

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        """End the run: cancelled with its job, failed at its first failed item, or
        resumed past the map (its items are read back from their checkpoints)."""
        flows = self.flows
        run = str(job.params["run_id"])
        row = await asyncio.to_thread(flows.store.run, run)
        if row is None or row["status"] in ("succeeded", "failed", "cancelled"):
            return Finish(result={"run_id": run, "status": row["status"] if row else "gone"})
        driving = self._driving.pop(job.id, None)
        self._locks.pop(job.id, None)
        if driving is None:
            driving = await self._driving_of(job)
            self._driving.pop(job.id, None)
        if driving.span is not None:
            RequestTrace.end(driving.span)
        state = driving.state
        if cancelled:
            await flows.end(row, state, "cancelled", error="cancelled")
            return Finish(result={"run_id": run, "status": "cancelled"})
        failed = await asyncio.to_thread(self.store.items, job.id, ["failed"])
        if failed:
            error = failed[0].error or {}
            message = f"{len(failed)} of {job.total} map items failed; first: " + str(
                error.get("message", "failed")
            )
            await flows.end(row, state, "failed", error=message, step=error.get("step"))
            return Finish("failed", {"run_id": run, "status": "failed"}, error=message)
        try:
            ended = await flows.resume_driven(row, driving.principal, state)
        except WorkflowFailed as exc:
            return Finish("failed", {"run_id": run, "status": "failed"}, error=exc.message)
        return Finish(result={"run_id": run, "status": ended["status"]})
