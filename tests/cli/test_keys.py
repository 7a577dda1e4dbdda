"""`keel projects|users|keys|audit` against a running in-process Keel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp

from keel.server.app import create_app
from tests.cli.test_prompts import keel
from tests.support.app import build_services
from tests.support.http import served_in_thread


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


def test_keys_create_prints_the_key_once_and_list_never_shows_it(keel_api: list[str]) -> None:
    code, output = keel("keys", "create", "--role", "app", "--name", "svc", "--routes",
                        "fake-model", "--rpm", "60", "--budget", "5", *keel_api)  # fmt: skip
    assert code == 0, output
    token = next(line for line in output.splitlines() if line.startswith("keel_sk_"))
    base = keel_api[keel_api.index("--url") + 1]
    body = {"model": "other", "messages": [{"role": "user", "content": "x"}]}
    answer = httpx.post(
        f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}, json=body
    )
    assert answer.status_code == 403  # the routes scope the CLI set
    code, listed = keel("keys", "list", *keel_api)
    assert code == 0, listed
    assert "svc" in listed
    assert "rpm 60" in listed
    assert token.split("_", 3)[3] not in listed  # the secret (it may hold "_" itself)
    key_id = token.split("_")[2]
    code, revoked = keel("keys", "revoke", key_id, *keel_api)
    assert code == 0, revoked
    code, tail = keel("audit", "tail", "--no-follow", *keel_api)
    assert code == 0, tail
    assert "key.revoke" in tail
    assert "key.create" in tail


def test_projects_and_users_from_the_cli(keel_api: list[str]) -> None:
    code, output = keel("projects", "create", "acme", "--rpm", "100", *keel_api)
    assert code == 0, output
    assert "rpm 100" in output
    code, output = keel("users", "create", "grace", "--role", "viewer", "--project", "acme",
                        *keel_api)  # fmt: skip
    assert code == 0, output
    code, listed = keel("users", "list", "--project", "acme", *keel_api)
    assert "grace" in listed
    assert "viewer" in listed
    code, listed = keel("projects", "list", *keel_api)
    assert "acme" in listed
    code, output = keel("projects", "revoke", "acme", *keel_api)
    assert code == 0, output
    code, output = keel("keys", "create", "--project", "acme", *keel_api)
    assert code == 1
    assert "disabled" in output
