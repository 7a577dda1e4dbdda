"""Every YAML example in docs/workflows.md is a valid workflow or agent, as keel apply reads it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from keel.workflows.expr import Compiler
from keel.workflows.spec import AgentSpec, WorkflowSpec
from keel.workflows.validate import Checker

DOC = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"


def test_the_documented_examples_pass_the_apply_checks() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)
    checked = 0
    for block in blocks:
        data = yaml.safe_load(block)
        for spec in data.get("workflows", []):
            assert Checker(Compiler()).check(WorkflowSpec.model_validate(spec)) == [], spec["name"]
            checked += 1
        for spec in data.get("agents", []):
            AgentSpec.model_validate(spec)
            checked += 1
    assert checked >= 4
