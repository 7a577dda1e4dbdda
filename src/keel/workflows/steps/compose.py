"""Steps made of other steps: map (its steps once per item, at most `concurrency` items at
a time, each item's steps checkpointed under `map[i].`), workflow (another workflow, its
steps checkpointed under `step/`) and agent (a tool-using agent, as one step)."""

from __future__ import annotations

import asyncio
from typing import Any

from keel.errors import InvalidRequest, ServiceUnavailable
from keel.workflows.compiled import CompiledStep
from keel.workflows.engine import MAX_DEPTH, Result, RunState
from keel.workflows.runtime import Runtime


class MapStep:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        engine = self.runtime.engine
        assert engine is not None
        spec = step.spec.body
        items = step.values["over"](scope)
        if not isinstance(items, list):
            raise InvalidRequest(f"map over {spec.over!r} gave {type(items).__name__}, not a list")
        if len(items) > spec.max_items:
            raise InvalidRequest(f"map over {len(items)} items; max_items is {spec.max_items}")
        gate = asyncio.Semaphore(spec.concurrency)
        output = step.values.get("output")
        parent = f"workflow.{key}"

        async def one(index: int, item: Any) -> Any:
            async with gate:
                inner = {**scope, "item": item, "index": index, "steps": dict(scope["steps"])}
                last = await engine.steps(step.inner, inner, run, f"{key}[{index}].", parent)
                return output(inner) if output is not None else last

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(i, item)) for i, item in enumerate(items)]
        except BaseExceptionGroup as failed:  # the first item's failure stands for the map
            raise failed.exceptions[0] from None
        return Result([task.result() for task in tasks], input={"items": len(items)})


class SubWorkflow:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        engine, load = self.runtime.engine, self.runtime.workflow
        assert engine is not None
        assert load is not None
        if run.depth >= MAX_DEPTH:
            raise InvalidRequest(f"workflows nest more than {MAX_DEPTH} deep")
        workflow = await load(run.principal.project_id, step.spec.body.name)
        value = step.values["input"](scope)
        workflow.input.check(value, f"the input of workflow {step.spec.body.name!r}", key)
        run.depth += 1
        try:
            scope_inner: dict[str, Any] = {"input": value, "steps": {}}
            last = await engine.steps(
                workflow.steps, scope_inner, run, f"{key}/", f"workflow.{key}"
            )
            return Result(engine.finish(workflow, scope_inner, last), input=value)
        finally:
            run.depth -= 1


class AgentStep:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        load, run_agent = self.runtime.agent, self.runtime.run_agent
        if load is None or run_agent is None:
            raise ServiceUnavailable("agents are not available in this server")
        spec = await load(run.principal.project_id, step.spec.body.name)
        text = str(step.values["input"](scope))
        return await run_agent(spec, text, run, key)
