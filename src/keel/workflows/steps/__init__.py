"""The nine step kinds, one small executor each; `executors(runtime)` wires them up."""

from __future__ import annotations

from keel.workflows.engine import Executor
from keel.workflows.runtime import Runtime
from keel.workflows.steps.basic import Branch, Guard, Retrieve, Transform
from keel.workflows.steps.compose import AgentStep, MapStep, SubWorkflow
from keel.workflows.steps.http import HttpCall
from keel.workflows.steps.llm import LlmCall


def executors(runtime: Runtime) -> dict[str, Executor]:
    return {
        "llm": LlmCall(runtime),
        "retrieve": Retrieve(runtime),
        "http": HttpCall(runtime),
        "transform": Transform(),
        "branch": Branch(),
        "map": MapStep(runtime),
        "workflow": SubWorkflow(runtime),
        "guard": Guard(runtime),
        "agent": AgentStep(runtime),
    }
