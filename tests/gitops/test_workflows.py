"""`keel apply` of workflows: and agents: sections: versions only on change, errors with
file:line, and nothing applied when any entry is wrong."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from keel.gitops.api import KeelAPI
from keel.gitops.apply import ApplyError, apply_paths

FLOWS = """\
workflows:
  - name: summarise
    input:
      type: object
      properties:
        text: {type: string}
      required: [text]
    steps:
      - id: short
        llm:
          model: fake-model
          messages:
            - role: user
              content: "Summarise: {{ input.text }}"
  - name: outer
    steps:
      - id: inner
        workflow:
          name: summarise
          input: {text: "{{ input.body }}"}
agents:
  - name: helper
    model: fake-model
    tools:
      - name: run_summary
        workflow: summarise
        parameters: {type: object, properties: {text: {type: string}}}
"""

BROKEN = """\
workflows:
  - name: fine
    steps:
      - id: a
        transform: {value: 1}
  - name: broken
    steps:
      - id: a
        transform: {value: "{{ steps.b.output }}"}
      - id: b
        transform:
          value: "{{ steps.missing.output }}"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def test_apply_creates_versions_once_and_calls_resolve(tmp_path: Path, api: KeelAPI) -> None:
    path = write(tmp_path / "flows.yaml", FLOWS)
    outcomes = await apply_paths([path], api)
    assert sorted(str(o) for o in outcomes) == [
        "agents helper: created version 1",
        "workflows outer: created version 1",
        "workflows summarise: created version 1",
    ]
    again = await apply_paths([path], api)
    assert all(not o.changed for o in again)
    write(path, FLOWS.replace("Summarise:", "Summarise briefly:"))
    changed = await apply_paths([path], api)
    assert [str(o) for o in changed if o.changed] == ["workflows summarise: created version 2"]


async def test_an_unknown_step_is_an_apply_error_with_file_and_line_and_nothing_is_applied(
    tmp_path: Path, api: KeelAPI
) -> None:
    path = write(tmp_path / "broken.yaml", BROKEN)
    with pytest.raises(ApplyError) as caught:
        await apply_paths([path], api)
    [problem] = caught.value.problems
    assert str(problem) == (
        f"{path}:12: workflows[1].steps[1].transform.value: unknown step 'missing' (steps: a, b)"
    )
    listed = await api.call("GET", "/api/workflows")
    assert listed["data"] == []  # not even the valid one


async def test_a_cycle_and_a_call_of_an_unknown_workflow_are_apply_errors(
    tmp_path: Path, api: KeelAPI
) -> None:
    cycle = BROKEN.replace("{{ steps.missing.output }}", "{{ steps.a.output }}")
    path = write(tmp_path / "cycle.yaml", cycle)
    with pytest.raises(ApplyError, match="steps form a cycle: a -> b -> a"):
        await apply_paths([path], api)
    calls = write(
        tmp_path / "calls.yaml",
        FLOWS.split("agents:")[0].replace(
            "        workflow:\n          name: summarise",
            "        workflow:\n          name: nowhere",
        ),
    )
    with pytest.raises(
        ApplyError, match=r"calls.yaml:15: workflows.1.: .*unknown workflow 'nowhere'"
    ):
        await apply_paths([calls], api)
    assert (await api.call("GET", "/api/workflows"))["data"] == []


async def test_the_api_refuses_an_invalid_spec_with_a_400(
    gateway: tuple[httpx.AsyncClient, str],
) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    spec = {"name": "x", "steps": [{"id": "a", "transform": {"value": "{{ steps.z.output }}"}}]}
    answer = await client.post("/api/workflows", json={"spec": spec}, headers=headers)
    assert answer.status_code == 400
    assert "unknown step 'z'" in answer.json()["error"]["message"]
    listed = await client.get("/api/workflows", headers=headers)
    assert listed.json()["data"] == []
