from __future__ import annotations

from pathlib import Path

import pytest

from keel.gitops.api import KeelAPI
from keel.gitops.apply import SECTIONS, ApplyError, ApplyOptions, Outcome, apply_paths
from keel.gitops.base import Handler
from keel.gitops.source import Located, Problem


class RoutesHandler:
    """A stand-in for a future section: records what the orchestrator asks of it."""

    section = "routes"
    calls: list[str]

    def __init__(self, options: ApplyOptions):
        self.entries: list[Located] = []
        RoutesHandler.calls.append("init")

    def load(self, entry: Located) -> list[Problem]:
        RoutesHandler.calls.append("load")
        if "target" not in entry.value:
            return [entry.problem("is required", ("target",))]
        self.entries.append(entry)
        return []

    async def plan(self, api: KeelAPI) -> list[Problem]:
        RoutesHandler.calls.append("plan")
        return []

    async def apply(self, api: KeelAPI, *, dry_run: bool) -> list[Outcome]:
        RoutesHandler.calls.append("apply")
        return [Outcome("routes", e.value["name"], "set", True) for e in self.entries]


@pytest.fixture
def sections() -> dict[str, type[Handler]]:
    RoutesHandler.calls = []
    return {**SECTIONS, "routes": RoutesHandler}  # type: ignore[dict-item]


async def test_new_sections_plug_in_as_handlers_keyed_by_top_level_key(
    tmp_path: Path, api: KeelAPI, sections: dict[str, type[Handler]]
) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(
        "routes:\n  - name: chat\n    target: fake-model\n"
        "prompts:\n  - name: hello\n    messages:\n      - role: system\n        content: Hi\n"
    )
    outcomes = await apply_paths([path], api, sections=sections)
    assert sorted(str(o) for o in outcomes) == [
        "prompts hello: created version 1",
        "routes chat: set",
    ]
    assert RoutesHandler.calls == ["init", "load", "plan", "apply"]


async def test_a_problem_in_any_section_stops_every_section(
    tmp_path: Path, api: KeelAPI, sections: dict[str, type[Handler]]
) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(
        "prompts:\n  - name: hello\n    messages:\n      - role: system\n        content: Hi\n"
        "routes:\n  - name: chat\n"
    )
    with pytest.raises(ApplyError, match=r"keel.yaml:7: routes\[0\].target: is required"):
        await apply_paths([path], api, sections=sections)
    assert "apply" not in RoutesHandler.calls
    assert (await api.call("GET", "/api/prompts"))["data"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- 1\n- 2\n", "expected a mapping of sections"),
        ("prompts: {name: x}\n", "prompts: must be a list of entries"),
        ("prompts:\n  - just text\n", "a prompt must be a mapping"),
    ],
)
async def test_documents_of_the_wrong_shape_are_explained(
    tmp_path: Path, api: KeelAPI, text: str, message: str
) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(text)
    with pytest.raises(ApplyError, match=message):
        await apply_paths([path], api)


async def test_settings_beside_declarations_are_skipped_and_a_typo_gets_a_suggestion(
    tmp_path: Path, api: KeelAPI
) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text("port: 8000\nbreaker_failures: 3\nprompts: []\n")
    assert await apply_paths([path], api) == []  # settings are `keel serve`'s, not apply's
    path.write_text("port: 8000\nprovider: []\n")
    with pytest.raises(ApplyError) as info:
        await apply_paths([path], api)
    assert f"{path}:2: provider: unknown section" in str(info.value)
    assert "did you mean 'providers'?" in str(info.value)
