"""keel.yaml as platform engineers use it: export, apply (with --dry-run and --prune),
deletes, the audit trail, weights and target health, against an in-process Keel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp
from typer.testing import CliRunner

from keel.cli.app import app
from keel.server.app import create_app
from keel.server.services import Services
from tests.support.app import build_services
from tests.support.http import served_in_thread

runner = CliRunner()

DECLARED = """\
providers:
  - name: primary
    kind: openai_compat
    base_url: http://127.0.0.1:9/v1
    api_key: {$env: GITOPS_TEST_KEY}
  - name: spare
    kind: openai_compat
    base_url: http://127.0.0.1:10/v1
models:
  - name: chat
    provider: primary
    upstream_model: small
  - name: chat
    provider: primary
    upstream_model: large
  - name: old
    provider: spare
    upstream_model: tiny
routes:
  - name: chat-default
    targets: {chat@1: 90, chat@2: 10}
  - name: legacy
    targets: {old@1: 1}
prompts:
  - name: greet
    messages:
      - role: system
        content: Greet the user.
    labels: {production: latest}
  - name: bye
    messages:
      - role: system
        content: Say goodbye.
"""


@pytest.fixture
def keel_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[list[str], Services]]:
    """A running in-process Keel: the --url/--key options that reach it, and its services."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("GITOPS_TEST_KEY", "sk-test")
    monkeypatch.setenv("KEEL_CONFIG", "/dev/null")
    made: list[tuple[Services, str]] = []

    async def make_app() -> ASGIApp:
        services, key = build_services(tmp_path / "data", "http://127.0.0.1:9/v1")
        made.append((services, key))
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        services, key = made[0]
        yield ["--url", base, "--key", key], services


def keel(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def assert_no_changes(output: str) -> None:
    """Apply's report: "no changes" at the end, and every line before it says so too."""
    lines = output.strip().splitlines()
    assert lines[-1] == "no changes", output
    assert all("no changes" in line for line in lines), output


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_export_then_apply_says_no_changes_on_a_fresh_keel(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, _ = keel_api
    code, exported = keel("export", *target)
    assert code == 0, exported
    code, output = keel("apply", "-f", str(write(tmp_path / "e.yaml", exported)), *target)
    assert code == 0, output
    assert_no_changes(output)


def test_export_round_trips_everything_apply_reads(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, _ = keel_api
    code, output = keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    assert code == 0, output
    code, exported = keel("export", *target)
    assert code == 0
    assert "prompts:" in exported
    assert "Greet the user." in exported
    assert "GITOPS_TEST_KEY" in exported
    assert "sk-test" not in exported
    code, output = keel("apply", "-f", str(write(tmp_path / "e.yaml", exported)), *target)
    assert code == 0, output
    assert_no_changes(output)


def test_dry_run_prints_the_diff_and_changes_nothing(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, services = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    edited = write(tmp_path / "edited.yaml", DECLARED.replace("chat@1: 90, chat@2: 10",
                                                             "chat@1: 50, chat@2: 50"))  # fmt: skip
    code, output = keel("apply", "-f", str(edited), "--dry-run", *target)
    assert code == 0, output
    assert "routes chat-default: update: targets.chat@1 90 → 50, targets.chat@2 10 → 50" in output
    assert "dry run: nothing was changed" in output
    route = services.registry.get_route("default", "chat-default")
    assert route["targets"] == {"chat@1": 90, "chat@2": 10}


def test_prune_removes_exactly_what_the_file_dropped_with_an_audit_row_each(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, services = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    # Drop the legacy route, its model and provider, and the 'bye' prompt.
    trimmed = DECLARED.split("  - name: spare\n")[0] + "models:" + DECLARED.split("models:")[1]
    trimmed = trimmed.replace("  - name: old\n    provider: spare\n    upstream_model: tiny\n", "")
    trimmed = trimmed.replace("  - name: legacy\n    targets: {old@1: 1}\n", "")
    trimmed = trimmed.split("  - name: bye\n")[0]
    path = write(tmp_path / "trimmed.yaml", trimmed)
    before = {e.id for e in services.audit.list("default", limit=1000)}
    code, output = keel("apply", "-f", str(path), "--prune", *target)
    assert code == 0, output
    assert "routes legacy: removed" in output
    assert "models old@1: removed" in output
    assert "providers spare: removed" in output
    assert "prompts bye: archived" in output
    new = [e for e in services.audit.list("default", limit=1000) if e.id not in before]
    assert sorted((e.action, e.target_id) for e in new) == [
        ("model.delete", "old@1"), ("prompt.archive", "bye"), ("provider.delete", "spare"),
        ("route.delete", "legacy"),
    ]  # fmt: skip
    assert [p["name"] for p in services.registry.list_providers("default")] == ["primary"]
    assert [m["ref"] for m in services.registry.list_models("default")] == ["chat@1", "chat@2"]
    code, output = keel("apply", "-f", str(path), "--prune", *target)
    assert_no_changes(output)


def test_prune_refuses_a_version_that_still_gets_traffic(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, services = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    # Version 2 leaves the route and the file at once: refused, nothing changed.
    dropped = DECLARED.replace("{chat@1: 90, chat@2: 10}", "{chat@1: 100}").replace(
        "  - name: chat\n    provider: primary\n    upstream_model: large\n", ""
    )
    code, output = keel("apply", "-f", str(write(tmp_path / "d.yaml", dropped)), "--prune",
                        *target)  # fmt: skip
    assert code == 1
    assert (
        "cannot prune model version chat@2: route 'chat-default' sends it 10% of its "
        "traffic now (weight 10); set its weight to 0 and apply, then prune it" in output
    )
    assert "nothing was changed" in output
    assert services.registry.get_route("default", "chat-default")["targets"]["chat@2"] == 10
    # Weight 0 first, then prune: both accepted.
    drained = DECLARED.replace("chat@2: 10", "chat@2: 0")
    assert keel("apply", "-f", str(write(tmp_path / "w.yaml", drained)), *target)[0] == 0
    code, output = keel("apply", "-f", str(write(tmp_path / "d.yaml", dropped)), "--prune",
                        *target)  # fmt: skip
    assert code == 0, output
    assert "models chat@2: removed" in output


def test_delete_refuses_what_a_route_uses_with_409_and_the_reason(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, _ = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    code, output = keel("models", "delete", "chat@2", *target)
    assert code == 1
    assert "409" in output
    assert "route 'chat-default' (weight 10)" in output
    code, output = keel("providers", "delete", "spare", *target)
    assert code == 1
    assert "409" in output
    assert "old@1" in output
    assert keel("routes", "delete", "legacy", *target)[0] == 0
    assert keel("models", "delete", "old@1", *target)[0] == 0
    code, output = keel("providers", "delete", "spare", *target)
    assert code == 0, output


def test_reapplying_an_earlier_prompt_text_reuses_its_version(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, services = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    changed = DECLARED.replace("Greet the user.", "Greet the user warmly.")
    keel("apply", "-f", str(write(tmp_path / "v2.yaml", changed)), *target)
    code, output = keel("apply", "-f", str(tmp_path / "keel.yaml"), *target)
    assert code == 0, output
    assert "prompts greet: no changes (the text is version 1's; newest is 2)" in output
    assert "moved production 2 → 1" in output
    versions = services.prompts.list_versions("default", "greet") if services.prompts else []
    assert [v.version for v in versions] == [2, 1]


def test_a_negative_weight_is_blamed_on_the_number(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, _ = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    code, output = keel("routes", "set-split", "chat-default", "chat@1=100", "chat@2=-10",
                        *target)  # fmt: skip
    assert code == 2
    assert "weight of chat@2 is -10, below 0; weights are relative" in output
    assert "not version=weight" not in output


def test_audit_tail_shows_before_and_after_and_distinct_actions(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, _ = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    keel("routes", "set-split", "chat-default", "chat@1=50", "chat@2=50", *target)
    keel("routes", "promote", "chat-default", "chat@2", *target)
    edited = DECLARED.replace("{chat@1: 90, chat@2: 10}", "{chat@1: 80, chat@2: 20}")
    keel("apply", "-f", str(write(tmp_path / "e.yaml", edited)), *target)
    code, output = keel("audit", "tail", "--no-follow", "--json", "--target-type", "route",
                        *target)  # fmt: skip
    assert code == 0, output
    records = [json.loads(line) for line in output.splitlines()]
    routes = [r for r in records if r["target_id"] == "chat-default"]
    assert [r["action"] for r in routes] == [
        "route.create", "route.split", "route.promote", "route.apply",
    ]  # fmt: skip
    assert routes[1]["before"]["targets"] == {"chat@1": 90, "chat@2": 10}
    assert routes[1]["after"]["targets"] == {"chat@1": 50, "chat@2": 50}
    code, output = keel("audit", "tail", "--no-follow", "--target-type", "route", *target)
    assert code == 0
    assert "before" in output
    assert "after" in output


def test_routes_show_has_each_targets_health(
    keel_api: tuple[list[str], Services], tmp_path: Path
) -> None:
    target, _ = keel_api
    keel("apply", "-f", str(write(tmp_path / "keel.yaml", DECLARED)), *target)
    code, output = keel("routes", "show", "chat-default", *target)
    assert code == 0, output
    assert "failures/min" in output
    assert "healthy" in output


def test_apply_help_covers_every_section() -> None:
    code, output = keel("apply", "--help")
    assert code == 0
    for section in ("providers", "models", "routes", "deployments", "prompts", "--prune"):
        assert section in output


def test_a_local_keel_yaml_with_declarations_breaks_no_command(
    keel_api: tuple[list[str], Services], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, _ = keel_api
    folder = tmp_path / "project"
    folder.mkdir()
    write(folder / "keel.yaml", "log_level: warning\n" + DECLARED)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("KEEL_CONFIG")
    monkeypatch.delenv("GITOPS_TEST_KEY")  # resolved by the server, not by the CLI
    code, output = keel("config", "show")
    assert code == 0, output
    assert "keel.yaml" in output
    assert "declarations in it: providers, models, routes, prompts" in output
    for command in (["routes", "list"], ["models", "list"], ["providers", "list"],
                    ["prompts", "list"], ["export"]):  # fmt: skip
        code, output = keel(*command, *target)
        assert code == 0, (command, output)


def test_a_refused_key_names_the_data_dir_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keel_api: tuple[list[str], Services]
) -> None:
    target, _ = keel_api
    other = tmp_path / "other-data"
    other.mkdir()
    (other / "admin.key").write_text("keel_sk_abcdefgh_" + "x" * 32 + "\n")
    monkeypatch.setenv("KEEL_DATA_DIR", str(other))
    monkeypatch.delenv("KEEL_API_KEY", raising=False)
    code, output = keel("routes", "list", "--url", target[1])
    assert code == 1
    assert "401" in output
    assert f"the admin key in {other / 'admin.key'}, from data dir {other}" in output
