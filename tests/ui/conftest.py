"""An in-process Keel with the console, keys of every role and a little data to show."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keel.prompts.spec import PromptContent
from keel.registry.specs import ModelVersionSpec, ProviderSpec, RouteSpec
from keel.server.app import create_app
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

PROVIDER_SECRET = "sk-upstream-provider-secret-0123456789"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Console:
    services: Services
    app: object
    keys: dict[str, str]  # role → full key

    def client(self, base_url: str = "http://keel") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url=base_url)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found[1]


async def login(client: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await client.get("/ui/login")
    response = await client.post(
        "/ui/login", data={"api_key": key, "csrf_token": csrf_of(form.text), "next": "/ui/"}
    )
    return response


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Post a form as the browser would: with the CSRF token of the page it is on."""
    html = (await client.get(page)).text
    return await client.post(action, data={"csrf_token": csrf_of(html), **data})


def seed(services: Services, upstream_url: str) -> None:
    """A provider with a secret, two model versions, a route and a prompt with 2 versions."""
    registry, project = services.registry, "default"
    registry.put_provider(project, ProviderSpec(name="up", kind="openai_compat",
                          base_url=upstream_url, api_key=PROVIDER_SECRET), "test")  # fmt: skip
    for temperature in (0.1, 0.2):
        registry.add_model_version(project, ModelVersionSpec(
            name="chat", provider="up", upstream_model="upstream-model",
            params={"temperature": temperature}), "test")  # fmt: skip
    registry.put_route(project, RouteSpec(name="chat", targets={"chat@1": 100}), "test")
    assert services.prompts is not None
    for system in ("You answer about {{ product }}.", "You are a pirate who sells {{ product }}."):
        content = PromptContent.model_validate({
            "messages": [{"role": "system", "content": system}],
            "variables": [{"name": "product", "type": "string"}],
            "config": {"model": "fake-model"},
        })  # fmt: skip
        services.prompts.create_version(project, "support", content, message="v", actor="test")
    services.prompts.set_label(project, "support", "production", 1, actor="test")


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    upstream = FakeUpstream()
    await upstream.start()
    services, admin = build_services(tmp_path, upstream.base_url)
    project = services.keys.ensure_project()
    keys = {"admin": admin}
    for role in ("developer", "viewer", "app"):
        keys[role] = services.keys.create_key(project_id=project, role=role, name=role)[1]
    seed(services, upstream.base_url)
    app = create_app(services.settings, services=services)
    yield Console(services, app, keys)
    await stop_services(services)
    await upstream.stop()
