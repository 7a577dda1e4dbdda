"""Provider kinds as plugins: a package installed from tests/ adds kind `echo`, and a
provider of that kind is created through the admin API and answers through the router."""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.auth.secrets import SecretBox
from keel.deploy.manager import DeploymentManager, ServerOptions
from keel.errors import ServiceUnavailable
from keel.events import LocalChangeBus
from keel.providers.base import Operation, ProviderResponse
from keel.providers.plugins import PluginError, ProviderConfig, ProviderPlugins
from keel.registry.service import RegistryService
from keel.registry.specs import ModelVersionSpec, ProviderSpec
from keel.routing.router import Router
from keel.routing.sync import RegistrySync
from keel.server.app import create_app
from keel.server.services import stop_services
from keel.store import migrate
from keel.store.db import Database
from tests.support.app import build_services

PACKAGE = Path(__file__).parent / "plugin_pkg"
P = "default"
CHAT = {"model": "echo-chat", "messages": [{"role": "user", "content": "Say hi"}]}


@pytest.fixture(scope="module")
def echo_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/providers/plugin_pkg installed with pip, offline, into a folder of its own."""
    root = tmp_path_factory.mktemp("echo")
    source = root / "source"  # building writes into the source tree; keep tests/ clean
    shutil.copytree(PACKAGE, source)
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


@pytest.fixture(autouse=True)
def forget_plugins() -> Iterator[None]:
    """Every test leaves sys.path and sys.modules as it found them: no plugin outlives it."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name.split(".")[0] in ("keel_echo", "broken_plugin"):
            del sys.modules[name]
    importlib.invalidate_caches()


def install(site: Path) -> None:
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()


@asynccontextmanager
async def running_keel(data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process Keel that follows registry changes, and an admin client for it.

    Started by the test itself, after it installed the plugins it wants loaded.
    """
    services, key = build_services(data_dir, "http://127.0.0.1:9/v1")
    services.sync.attach(services.events)
    app = create_app(services.settings, services=services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keel",
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            yield client
    finally:
        await stop_services(services)


async def wait_for_model(client: httpx.AsyncClient, model: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        if model in listed:
            return
        assert time.monotonic() < deadline, f"{model} never appeared in /v1/models: {listed}"
        await asyncio.sleep(0.05)


async def test_a_kind_from_an_installed_package_is_created_by_api_and_answers_chat(
    echo_package: Path, tmp_path: Path
) -> None:
    install(echo_package)
    async with running_keel(tmp_path) as client:
        provider = {"kind": "echo", "config": {"prefix": "echo: "}}
        created = await client.put("/api/providers/parrot", json=provider)
        assert created.status_code == 200, created.text
        assert created.json()["data"]["kind"] == "echo"
        model = {"name": "echo-chat", "provider": "parrot", "upstream_model": "echo"}
        assert (await client.post("/api/models", json=model)).status_code == 201
        route = {"targets": {"echo-chat@1": 100}}
        assert (await client.put("/api/routes/echo-chat", json=route)).status_code == 200
        await wait_for_model(client, "echo-chat")

        answer = await client.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "echo: Say hi"

        streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert streamed.status_code == 200, streamed.text
        text = "".join(
            chunk["choices"][0]["delta"].get("content", "")
            for chunk in sse_chunks(streamed.text)
            if chunk.get("choices")
        )
        assert text == "echo: Say hi"


def sse_chunks(body: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in body.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def test_a_kind_no_installed_package_provides_is_refused_with_how_to_add_one(
    tmp_path: Path,
) -> None:
    async with running_keel(tmp_path) as client:
        refused = await client.put("/api/providers/parrot", json={"kind": "echo"})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "kind"
        known = "unknown provider kind 'echo' (known: anthropic, local, openai_compat)"
        assert known in error["message"]
        assert "'keel.providers' entry point" in error["message"]
        assert (await client.get("/api/providers")).json() == []


def test_keels_own_kinds_come_from_its_entry_points() -> None:
    plugins = ProviderPlugins.load()
    assert plugins.kinds() == ["anthropic", "local", "openai_compat"]
    source = plugins.get("openai_compat").source
    assert "entry point 'openai_compat'" in source
    assert "of keel " in source  # declared by Keel's own package, as a plugin would be


def dist_info(site: Path, name: str, entry_points: str) -> None:
    """A distribution importlib.metadata finds: a .dist-info folder with its entry points."""
    folder = site / f"{name}-0.1.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (folder / "entry_points.txt").write_text(entry_points)


def test_a_plugin_that_fails_to_load_is_named_with_its_package(tmp_path: Path) -> None:
    dist_info(tmp_path, "broken-plugin", "[keel.providers]\nbroken = broken_plugin:register\n")
    install(tmp_path)
    with pytest.raises(PluginError) as failed:
        ProviderPlugins.load()
    message = str(failed.value)
    assert "entry point 'broken' (broken_plugin:register) of broken-plugin 0.1" in message
    assert "No module named 'broken_plugin'" in message
    assert "fix or uninstall that package" in message


def test_two_packages_claiming_one_kind_are_both_named(echo_package: Path, tmp_path: Path) -> None:
    install(echo_package)
    dist_info(tmp_path, "other-echo", "[keel.providers]\nalso-echo = keel_echo:register\n")
    install(tmp_path)
    with pytest.raises(PluginError) as clash:
        ProviderPlugins.load()
    message = str(clash.value)
    assert "kind 'echo' is registered twice" in message
    assert "of keel-echo-provider 0.1.0" in message
    assert "of other-echo 0.1" in message


def test_register_refuses_bad_and_reserved_kinds() -> None:
    plugins = ProviderPlugins()

    def factory(config: ProviderConfig) -> Any:
        raise AssertionError("not called")

    with pytest.raises(PluginError, match="1 to 32 lowercase letters"):
        plugins.register("Echo Provider", factory)
    with pytest.raises(PluginError, match="keeps for the model servers it runs itself"):
        plugins.register("local", factory)
    plugins.register("echo", factory)
    assert plugins.kinds() == ["echo", "local"]
    plugins.unregister("echo")
    assert plugins.kinds() == ["local"]


class Answers:
    """A provider that answers every call with its own name."""

    def __init__(self, config: ProviderConfig):
        self.name = config.name

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        return ProviderResponse(body={"choices": [], "from": self.name}, usage=None)

    async def close(self) -> None:
        pass


async def test_a_provider_whose_plugin_is_gone_or_fails_says_why_and_the_rest_serve(
    tmp_path: Path,
) -> None:
    def boom(config: ProviderConfig) -> Any:
        raise ValueError("config.region is required")

    plugins = ProviderPlugins()
    for kind, factory in [("fine", Answers), ("gone", Answers), ("boom", boom)]:
        plugins.register(kind, factory)
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    migrate.upgrade(database)
    registry = RegistryService(database, SecretBox.load(tmp_path, None), LocalChangeBus(), plugins)
    for kind in ("fine", "gone", "boom"):
        registry.put_provider(P, ProviderSpec(name=f"{kind}-up", kind=kind), "t")
        registry.add_model_version(
            P, ModelVersionSpec(name=kind, provider=f"{kind}-up", upstream_model="m"), "t"
        )
    plugins.unregister("gone")  # its package was uninstalled since the provider was added
    router = Router()
    sync = RegistrySync(
        registry, router, DeploymentManager(ServerOptions(data_dir=tmp_path)), {}, plugins=plugins
    )
    await sync.refresh()

    def provider(model: str) -> Any:
        route = router.table.lookup(P, model)
        assert route is not None
        return route.weighted[0][0].provider

    answer = await provider("fine").send("chat/completions", {})
    assert answer.body["from"] == "fine-up"
    with pytest.raises(ServiceUnavailable) as gone:
        await provider("gone").send("chat/completions", {})
    assert "provider 'gone-up' is of kind 'gone', which no installed plugin provides" in str(
        gone.value
    )
    assert "'keel.providers' entry point" in str(gone.value)
    with pytest.raises(ServiceUnavailable) as failed:
        await provider("boom").send("chat/completions", {})
    assert "provider 'boom-up' (kind boom) could not be set up: config.region is required" in (
        str(failed.value)
    )
    await sync.close()
    database.dispose()
