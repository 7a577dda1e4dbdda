"""keel.yaml's declarations applied when the gateway starts, through the app's own /api."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from keel.server.app import create_app
from keel.server.declarations import DeclarationsFailed
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

KEEL_YAML = """\
port: 9123
log_level: info

providers:
  - name: primary
    kind: openai_compat
    base_url: {url}
  - name: secondary
    kind: openai_compat
    base_url: {url}
models:
  - name: chat
    provider: primary
    upstream_model: small
  - name: chat
    provider: secondary
    upstream_model: large
routes:
  - name: chat-default
    targets: {{chat@1: 90, chat@2: 10}}
prompts:
  - name: greet
    messages:
      - role: system
        content: Greet the user.
    labels: {{production: latest}}
"""


@pytest.fixture
async def services(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Services]:
    built, _ = build_services(tmp_path / "data", upstream.base_url)
    yield built
    await stop_services(built)


async def start(services: Services, path: Path) -> tuple[httpx.AsyncClient, list[str]]:
    """Run the app's start-up with `path` as keel.yaml; the audit actions it wrote."""
    app = create_app(services.settings, services=services, declarations=path)
    async with app.router.lifespan_context(app):
        pass
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel")
    return client, [e.action for e in services.audit.list("default")]


async def test_start_applies_the_declarations_once(
    tmp_path: Path, services: Services, upstream: FakeUpstream
) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(KEEL_YAML.format(url=upstream.base_url))
    _, actions = await start(services, path)
    assert sorted(actions) == [
        "model.create", "model.create", "prompt.label.set", "prompt.version.create",
        "provider.create", "provider.create", "route.create",
    ]  # fmt: skip
    route = services.registry.get_route("default", "chat-default")
    assert route["targets"] == {"chat@1": 90, "chat@2": 10}
    # The routing table already has it: the first request is served by the new route.
    assert services.router.table.lookup("default", "chat-default") is not None
    entries = services.audit.list("default")
    assert {e.actor for e in entries} == {"key:keel.yaml"}
    # A second start with the same file changes nothing.
    _, again = await start(services, path)
    assert len(again) == len(actions)


async def test_a_wrong_declaration_stops_the_start_and_changes_nothing(
    tmp_path: Path, services: Services, upstream: FakeUpstream
) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(KEEL_YAML.format(url=upstream.base_url).replace("chat@2: 10", "ghost@1: 10"))
    with pytest.raises(DeclarationsFailed, match="nothing was changed"):
        await start(services, path)
    assert services.registry.list_providers("default") == []


async def test_the_temporary_identity_is_gone_after_the_start(
    tmp_path: Path, services: Services, upstream: FakeUpstream
) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text(KEEL_YAML.format(url=upstream.base_url))
    client, _ = await start(services, path)
    async with client:
        response = await client.get("/api/routes")
    assert response.status_code == 401
