from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from starlette.types import ASGIApp
from typer.testing import CliRunner

from keel.cli import prompts as cli_prompts
from keel.cli.app import app
from keel.server.app import create_app
from tests.support.app import build_services
from tests.support.http import served_in_thread

runner = CliRunner()

V1 = """\
name: support-reply
messages:
  - role: system
    content: You answer questions about {{ product }}. Keep it short.
  - role: user
    content: "{{ question }}"
variables:
  - name: product
    default: Keel
  - name: question
  - name: count
    type: integer
    required: false
config:
  model: fake-model
  temperature: 0.2
labels:
  production: latest
"""


@pytest.fixture
def keel_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A running in-process Keel; yields the --url/--key options that reach it."""
    monkeypatch.setenv("COLUMNS", "200")
    keys: list[str] = []

    async def make_app() -> ASGIApp:
        services, key = build_services(tmp_path / "data", "http://127.0.0.1:9/v1")
        keys.append(key)
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        yield ["--url", base, "--key", keys[0]]


def keel(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_push_list_show_label_and_rollback(tmp_path: Path, keel_api: list[str]) -> None:
    path = tmp_path / "support-reply.yaml"
    path.write_text(V1)
    assert keel("prompts", "push", str(path), "-m", "first", *keel_api) == (
        0, "support-reply: created version 1\n")  # fmt: skip
    assert keel("prompts", "push", str(path), "-m", "again", *keel_api) == (
        0, "support-reply: no changes (version 1)\n")  # fmt: skip
    path.write_text(V1.replace("Keep it short.", "Be kind."))
    assert keel("prompts", "push", str(path), "-m", "kinder", *keel_api)[1] == (
        "support-reply: created version 2\n")  # fmt: skip

    code, output = keel("prompts", "list", *keel_api)
    assert code == 0
    assert "support-reply" in output
    assert "latest=2" in output
    assert "production" not in output  # push leaves labels alone

    assert keel("prompts", "label", "support-reply", "production", "2", *keel_api) == (
        0, "support-reply: production unset → 2\n")  # fmt: skip
    assert keel("prompts", "label", "support-reply", "production", "1", *keel_api) == (
        0, "support-reply: production 2 → 1\n")  # fmt: skip

    code, shown = keel("prompts", "show", "support-reply", *keel_api)
    assert code == 0
    assert shown.startswith("# support-reply version 1 (labels: production)\n")
    assert "name: support-reply\n" in shown
    assert "Keep it short." in shown
    code, shown = keel("prompts", "show", "support-reply", "--version", "2", *keel_api)
    assert "Be kind." in shown
    code, versions = keel("prompts", "versions", "support-reply", *keel_api)
    assert "kinder" in versions


def test_show_output_can_be_pushed_back(tmp_path: Path, keel_api: list[str]) -> None:
    path = tmp_path / "support-reply.yaml"
    path.write_text(V1)
    keel("prompts", "push", str(path), *keel_api)
    _, shown = keel("prompts", "show", "support-reply", "--label", "latest", *keel_api)
    copy = tmp_path / "copy.yaml"
    copy.write_text(shown)
    assert keel("prompts", "push", str(copy), *keel_api)[1] == (
        "support-reply: no changes (version 1)\n")  # fmt: skip


def test_diff_marks_removed_and_added_lines(tmp_path: Path, keel_api: list[str]) -> None:
    path = tmp_path / "support-reply.yaml"
    path.write_text(V1)
    keel("prompts", "push", str(path), *keel_api)
    path.write_text(V1.replace("temperature: 0.2", "temperature: 0.6"))
    keel("prompts", "push", str(path), *keel_api)
    code, output = keel("prompts", "diff", "support-reply", "1", "2", *keel_api)
    assert code == 0
    lines = output.splitlines()
    assert lines[:2] == ["--- support-reply@1", "+++ support-reply@2"]
    assert "-  temperature: 0.2" in lines
    assert "+  temperature: 0.6" in lines
    assert keel("prompts", "diff", "support-reply", "2", "2", *keel_api)[1] == (
        "versions 2 and 2 are identical\n")  # fmt: skip


def test_diff_is_coloured_in_a_terminal(
    tmp_path: Path, keel_api: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "support-reply.yaml"
    path.write_text(V1)
    keel("prompts", "push", str(path), *keel_api)
    path.write_text(V1.replace("temperature: 0.2", "temperature: 0.6"))
    keel("prompts", "push", str(path), *keel_api)
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, color_system="standard", width=200)
    monkeypatch.setattr(cli_prompts, "out", terminal)
    assert keel("prompts", "diff", "support-reply", "1", "2", *keel_api)[0] == 0
    shown = screen.getvalue()
    assert "\x1b[31m-  temperature: 0.2\x1b[0m" in shown  # red
    assert "\x1b[32m+  temperature: 0.6\x1b[0m" in shown  # green


def test_render_types_variables_by_the_schema(tmp_path: Path, keel_api: list[str]) -> None:
    path = tmp_path / "support-reply.yaml"
    path.write_text(V1.replace("Keep it short.", "Keep it under {{ count }} words."))
    keel("apply", "-f", str(path), *keel_api)
    code, output = keel("prompts", "render", "support-reply", "-v", "question=Is 42 the answer?",
                        "-v", "count=20", *keel_api)  # fmt: skip
    assert code == 0, output
    assert "Keep it under 20 words." in output
    assert "Is 42 the answer?" in output
    code, output = keel("prompts", "render", "support-reply", *keel_api)
    assert code == 1
    assert "missing required variable 'question'" in output
    code, output = keel("prompts", "render", "support-reply", "-v", "question=x", "-v",
                        "count=many", *keel_api)  # fmt: skip
    assert code == 1
    assert "variable 'count' is integer" in output


def test_archive_hides_the_prompt(tmp_path: Path, keel_api: list[str]) -> None:
    path = tmp_path / "support-reply.yaml"
    path.write_text(V1)
    keel("prompts", "push", str(path), *keel_api)
    assert keel("prompts", "archive", "support-reply", *keel_api)[0] == 0
    assert "support-reply" not in keel("prompts", "list", *keel_api)[1]
    assert "support-reply (archived)" in keel("prompts", "list", "--all", *keel_api)[1]


def test_apply_reports_changes_then_no_changes(tmp_path: Path, keel_api: list[str]) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "support-reply.yaml").write_text(V1)
    code, output = keel("apply", "-f", str(folder), "--dry-run", *keel_api)
    assert (code, output.splitlines()[-1]) == (0, "dry run: nothing was changed")
    code, output = keel("apply", "-f", str(folder), *keel_api)
    assert code == 0
    assert output.splitlines() == [
        "prompts support-reply: created version 1",
        "prompts support-reply: moved production unset → 1",
    ]
    code, output = keel("apply", "-f", str(folder), *keel_api)
    assert output.splitlines()[-1] == "no changes"


def test_apply_errors_name_file_line_and_field(tmp_path: Path, keel_api: list[str]) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(V1.replace("temperature: 0.2", "temperature: [hot]"))
    code, output = keel("apply", "-f", str(path), *keel_api)
    assert code == 1
    assert f"{path}:16: config.temperature:" in output
    assert "nothing was changed" in output
    assert "support-reply" not in keel("prompts", "list", *keel_api)[1]


def test_unknown_prompt_reports_the_servers_message(keel_api: list[str]) -> None:
    code, output = keel("prompts", "show", "nope", *keel_api)
    assert code == 1
    assert "no prompt named 'nope'" in output
