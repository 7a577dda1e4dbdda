from __future__ import annotations

from pathlib import Path

import pytest

from keel.gitops.api import KeelAPI
from keel.gitops.apply import ApplyError, ApplyOptions, apply_paths

SUPPORT = """\
prompts:
  - name: support-reply
    message: first cut
    messages:
      - role: system
        content: |
          You answer questions about {{ product }}.
          Keep it short.
      - role: user
        content: "{{ question }}"
    variables:
      - name: product
        default: Keel
      - name: question
    config:
      model: fake-model
      temperature: 0.2
    labels:
      production: latest
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def test_first_apply_creates_version_1_and_sets_the_label(
    tmp_path: Path, api: KeelAPI
) -> None:
    path = write(tmp_path / "keel.yaml", SUPPORT)
    outcomes = await apply_paths([path], api)
    assert [str(o) for o in outcomes] == [
        "prompts support-reply: created version 1",
        "prompts support-reply: moved production unset → 1",
    ]
    version = await api.call("GET", "/api/prompts/support-reply")
    assert version["version"] == 1
    assert version["message"] == "first cut"
    assert version["messages"][0]["content"].startswith("You answer questions about")


async def test_applying_unchanged_files_creates_nothing(tmp_path: Path, api: KeelAPI) -> None:
    path = write(tmp_path / "keel.yaml", SUPPORT)
    await apply_paths([path], api)
    outcomes = await apply_paths([path], api)
    assert [(str(o), o.changed) for o in outcomes] == [
        ("prompts support-reply: no changes (version 1)", False)
    ]
    versions = await api.call("GET", "/api/prompts/support-reply/versions")
    assert len(versions["data"]) == 1


async def test_a_changed_prompt_gets_a_new_version_and_latest_labels_follow(
    tmp_path: Path, api: KeelAPI
) -> None:
    path = write(tmp_path / "keel.yaml", SUPPORT)
    await apply_paths([path], api)
    write(path, SUPPORT.replace("Keep it short.", "Be kind.").replace(
        "production: latest", "production: 1\n      staging: latest"))  # fmt: skip
    outcomes = await apply_paths([path], api, options=ApplyOptions(message="kinder"))
    assert [str(o) for o in outcomes] == [
        "prompts support-reply: created version 2",
        "prompts support-reply: moved staging unset → 2",
    ]
    listed = await api.call("GET", "/api/prompts")
    assert listed["data"][0]["labels"] == {"production": 1, "staging": 2, "latest": 2}
    assert (await api.call("GET", "/api/prompts/support-reply", params={"version": 2}))[
        "message"
    ] == "kinder"


async def test_rollback_by_pointing_the_label_back(tmp_path: Path, api: KeelAPI) -> None:
    path = write(tmp_path / "keel.yaml", SUPPORT)
    await apply_paths([path], api)
    write(path, SUPPORT.replace("Keep it short.", "Be kind."))
    await apply_paths([path], api)
    write(path, SUPPORT.replace("Keep it short.", "Be kind.").replace(
        "production: latest", "production: 1"))  # fmt: skip
    outcomes = await apply_paths([path], api)
    assert [str(o) for o in outcomes][-1] == "prompts support-reply: moved production 2 → 1"


async def test_dry_run_reports_and_changes_nothing(tmp_path: Path, api: KeelAPI) -> None:
    path = write(tmp_path / "keel.yaml", SUPPORT)
    outcomes = await apply_paths([path], api, dry_run=True)
    assert [str(o) for o in outcomes] == [
        "prompts support-reply: would create version 1",
        "prompts support-reply: would move production unset → 1",
    ]
    assert (await api.call("GET", "/api/prompts"))["data"] == []


async def test_a_folder_of_one_prompt_files_is_applied(tmp_path: Path, api: KeelAPI) -> None:
    folder = tmp_path / "prompts"
    write(folder / "greeter.yaml", "messages:\n  - role: system\n    content: Say hello.\n")
    write(folder / "nested" / "farewell.yml",
          "name: farewell\nmessages:\n  - role: system\n    content: Say bye.\n")  # fmt: skip
    outcomes = await apply_paths([folder], api)
    assert sorted(str(o) for o in outcomes) == [
        "prompts farewell: created version 1",
        "prompts greeter: created version 1",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SUPPORT.replace("temperature: 0.2", "temperature: hot"),
         ":17: prompts[0].config.temperature: Input should be a valid number"),
        (SUPPORT.replace("      - name: question\n", "      - name: question\n        kind: x\n"),
         ":15: prompts[0].variables[1].kind: is not a known field"),
        (SUPPORT.replace("Keep it short.", "Keep it {{ short."),
         ":8: prompts[0].messages[0].content: template error on line 2"),
        (SUPPORT.replace("content: \"{{ question }}\"", "content: \"{{ typo }}\""),
         ":10: prompts[0].messages[1].content: template error on line 1: undeclared variable"),
        (SUPPORT.replace("production: latest", "latest: 1"),
         ":19: prompts[0].labels: 'latest' is maintained automatically"),
        (SUPPORT.replace("production: latest", "production: 4"),
         ":19: prompts[0].labels.production: version 4 does not exist (the newest would be 1)"),
        (SUPPORT.replace("- role: user", "- role: robot"),
         ":9: prompts[0].messages[1].role: Input should be 'system', 'user' or 'assistant'"),
        (SUPPORT.replace("  - name: support-reply\n", "  - name: Bad Name\n"),
         ":2: prompts[0].name: String should match pattern"),
        ("guards: []\n" + SUPPORT, ":1: guards: unknown section (known: agents, deployments, "
         "models, prompts, providers, routes, workflows; or a setting"),
        (SUPPORT + SUPPORT.replace("prompts:\n", ""),
         ":20: prompts[1].name: prompt 'support-reply' is also defined at"),
    ],
)  # fmt: skip
async def test_invalid_files_name_file_line_and_field_and_change_nothing(
    tmp_path: Path, api: KeelAPI, text: str, expected: str
) -> None:
    path = write(tmp_path / "keel.yaml", text)
    other = write(tmp_path / "other.yaml", "messages:\n  - role: system\n    content: fine\n")
    with pytest.raises(ApplyError) as caught:
        await apply_paths([other, path], api)
    shown = [str(p) for p in caught.value.problems]
    assert any(line.startswith(f"{path}{expected}") for line in shown), shown
    assert (await api.call("GET", "/api/prompts"))["data"] == []


async def test_push_mode_leaves_labels_alone(tmp_path: Path, api: KeelAPI) -> None:
    path = write(tmp_path / "support-reply.yaml", SUPPORT)
    outcomes = await apply_paths([path], api, options=ApplyOptions(labels=False))
    assert [str(o) for o in outcomes] == ["prompts support-reply: created version 1"]
    listed = await api.call("GET", "/api/prompts")
    assert listed["data"][0]["labels"] == {"latest": 1}
