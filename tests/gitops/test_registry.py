"""`keel apply` for providers, models, routes and deployments, against an in-process Keel."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.gitops.api import KeelAPI
from keel.gitops.apply import apply_paths
from keel.gitops.source import ApplyError

CANARY = """\
providers:
  - name: vllm
    kind: openai_compat
    base_url: http://127.0.0.1:9/v1
    api_key: {$env: VLLM_TEST_KEY}
models:
  - name: chat
    provider: vllm
    upstream_model: llama-3
  - name: chat
    provider: vllm
    upstream_model: llama-3
    params: {temperature: 0.2}
routes:
  - name: chat-default
    targets: {chat@1: 90, chat@2: 10}
    fallbacks: [chat@1]
"""


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VLLM_TEST_KEY", "sk-test-0123456789")
    path = tmp_path / "keel.yaml"
    path.write_text(CANARY)
    return path


async def test_apply_creates_then_a_second_apply_changes_nothing(
    api: KeelAPI, canary: Path
) -> None:
    first = await apply_paths([canary], api)
    assert [str(o) for o in first] == [
        "providers vllm: create",
        "models chat: new version chat@1",
        "models chat: new version chat@2",
        "routes chat-default: create: chat@1 90, chat@2 10",
    ]
    route = await api.call("GET", "/api/routes/chat-default")
    assert route["targets"] == {"chat@1": 90, "chat@2": 10}
    provider = await api.call("GET", "/api/providers/vllm")
    assert provider["has_api_key"] is True
    assert await apply_paths([canary], api) == []  # reported as "no changes"


async def test_dry_run_reports_and_changes_nothing(api: KeelAPI, canary: Path) -> None:
    planned = await apply_paths([canary], api, dry_run=True)
    assert len(planned) == 4
    assert await api.call("GET", "/api/routes") == []
    assert await api.call("GET", "/api/models") == []


async def test_a_malformed_file_names_file_line_and_field_and_changes_nothing(
    api: KeelAPI, tmp_path: Path, canary: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(CANARY.replace("targets: {chat@1: 90, chat@2: 10}", "targets: {chat: 90}")
                      .replace("kind: openai_compat", "kind: openai"))  # fmt: skip
    with pytest.raises(ApplyError) as info:
        await apply_paths([broken], api)
    text = str(info.value)
    assert f"{broken}:3" in text  # kind, on line 3
    assert "kind" in text
    assert f"{broken}:16" in text  # the route's targets, on line 16
    assert "name@number" in text
    assert await api.call("GET", "/api/providers") == []


async def test_inline_keys_and_unknown_versions_are_refused(api: KeelAPI, tmp_path: Path) -> None:
    path = tmp_path / "k.yaml"
    path.write_text(
        "providers:\n  - name: p\n    kind: openai_compat\n    base_url: http://x.test/v1\n"
        "    api_key: sk-inline\n"
        "routes:\n  - name: r\n    targets: {ghost@1: 1}\n"
    )
    with pytest.raises(ApplyError) as info:
        await apply_paths([path], api)
    text = str(info.value)
    assert "never inlined" in text
    assert "sk-inline" not in text
    assert await api.call("GET", "/api/providers") == []


@pytest.fixture
def edited(tmp_path: Path, canary: Path) -> Path:
    """The canary file with version 2's params edited in place."""
    path = tmp_path / "edited.yaml"
    path.write_text(canary.read_text().replace("{temperature: 0.2}", "{temperature: 0.9}"))
    return path


async def test_editing_an_existing_version_in_place_is_refused(
    api: KeelAPI, canary: Path, edited: Path
) -> None:
    await apply_paths([canary], api)
    models = await api.call("GET", "/api/models")
    assert [m["ref"] for m in models] == ["chat@1", "chat@2"]
    with pytest.raises(ApplyError, match="immutable"):
        await apply_paths([edited], api)


async def test_a_key_variable_the_server_lacks_stops_the_apply_naming_the_server(
    api: KeelAPI, canary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The in-process server shares this environment: unset there means unset on the server.
    monkeypatch.delenv("VLLM_TEST_KEY")
    with pytest.raises(ApplyError) as info:
        await apply_paths([canary], api)
    text = str(info.value)
    assert f"{canary}:5: providers[0].api_key: environment variable VLLM_TEST_KEY is not set " \
           "on the Keel server" in text  # fmt: skip
    assert "not by the machine running 'keel apply'" in text
    assert await api.call("GET", "/api/providers") == []


async def test_the_key_is_sent_as_a_reference_never_as_its_value(
    api: KeelAPI, canary: Path
) -> None:
    await apply_paths([canary], api)
    provider = await api.call("GET", "/api/providers/vllm")
    assert provider["api_key_env"] == "VLLM_TEST_KEY"
