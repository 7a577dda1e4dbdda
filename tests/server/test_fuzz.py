"""Property-based run of every route in the OpenAPI schema: no input may produce a 5xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from starlette.types import ASGIApp

from keel.guard.policy import Policy
from keel.server.app import create_app
from tests.support.app import build_services
from tests.support.http import served_in_thread
from tests.support.upstream import FakeUpstream

KEY: dict[str, str] = {}
# POST routes that compute without storing anything (a viewer may call them).
READS_BY_POST = {"/api/prompts/{name}/render", "/api/guard/scan"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")

    async def make_app() -> ASGIApp:
        upstream = FakeUpstream()
        await upstream.start()
        services, key = build_services(data_dir, upstream.base_url, max_body_bytes=64 * 1024)
        KEY["value"] = key
        KEY["viewer"] = services.keys.create_key(project_id="default", role="viewer",
                                                 name="fuzz viewer")[1]  # fmt: skip
        assert services.guard is not None  # load the guard's model now, not in a timed call
        await asyncio.to_thread(Policy.builtin("default", services.guard.resources).warm_up)
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")


def _fuzz(
    schema: Any,
    examples: int,
    headers: dict[str, str],
    public_ok: bool,
    read_only: bool = False,
) -> int:
    # Driven through hypothesis directly: schemathesis' pytest plugin lags behind pytest.
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(headers=headers, timeout=10)
            where = f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
            assert response.status_code < 500, where
            if response.status_code >= 400:
                assert "error" in response.json(), where
            if not public_ok and case.path not in ("/healthz", "/readyz"):
                assert response.status_code in (400, 401, 404, 405, 413), where
            writes = case.method.upper() not in ("GET", "HEAD", "OPTIONS")
            if read_only and writes and case.operation.path not in READS_BY_POST:
                assert response.status_code >= 400, f"a read-only key wrote: {where}"

        run()
    return calls


def test_no_request_produces_a_server_error(api_schema: Any) -> None:
    calls = _fuzz(api_schema, 60, {"Authorization": f"Bearer {KEY['value']}"}, public_ok=True)
    assert calls >= 6 * 20  # every operation was exercised


def test_a_viewer_key_never_changes_anything(api_schema: Any) -> None:
    headers = {"Authorization": f"Bearer {KEY['viewer']}"}
    assert _fuzz(api_schema, 15, headers, public_ok=True, read_only=True) > 0


def test_unauthenticated_requests_are_refused(api_schema: Any) -> None:
    assert _fuzz(api_schema, 10, {}, public_ok=False) > 0
