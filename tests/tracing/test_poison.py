"""A NUL anywhere in a request is stored (as U+FFFD) on both stores and stops nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.server.app import create_app
from keel.server.services import Services, stop_services
from keel.tracing.store import NUL_STORED_AS
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

NUL = "\x00"
BOTH_STORES = pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True,
)  # fmt: skip


def client_for(services: Services) -> httpx.AsyncClient:
    app = create_app(services.settings, services=services)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keel")


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **fields}


def values(found: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(found, str):
        return [found]
    if isinstance(found, dict):
        return [*found, *(s for v in found.values() for s in values(v))]
    if isinstance(found, list):
        return [s for v in found for s in values(v)]
    return []


@BOTH_STORES
async def test_a_nul_in_every_field_is_stored_replaced_and_the_traces_after_it_too(
    tmp_path: Path, upstream: FakeUpstream, database_url: str
) -> None:
    # The probe: one {"user": "u\u0000"} stopped trace storage on PostgreSQL for good; the
    # poisoned batch was retried forever and 2,110 of the next 2,223 traces were spilled.
    services, key = build_services(tmp_path, upstream.base_url, database_url=database_url)
    auth = {"Authorization": f"Bearer {key}"}
    upstream.reply = f"an answer with a {NUL} in it"
    prompt = {"messages": [{"role": "user", "content": "Say {{ name }}"}],
              "variables": [{"name": "name"}], "config": {"model": "fake-model"}}  # fmt: skip
    poisoned: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("/v1/chat/completions", chat(user=f"u{NUL}"), {}),
        ("/v1/chat/completions", chat(model=f"stub{NUL}"), {}),
        ("/v1/chat/completions", chat(messages=[{"role": "user", "content": f"hi{NUL}"}]), {}),
        ("/v1/chat/completions", chat(stream=True, user=f"s{NUL}", stop=f"x{NUL}"), {}),
        ("/v1/chat/completions",
         {"prompt": {"name": "greet", "version": 1, "variables": {"name": f"a{NUL}b"}}}, {}),
        ("/v1/chat/completions", chat(), {"X-Keel-Metadata-Tag": f"a{NUL}b",
                                          "X-Keel-Session-Id": f"s{NUL}"}),
        ("/v1/completions", {"model": "fake-model", "prompt": f"p{NUL}"}, {}),
        ("/v1/embeddings", {"model": "fake-embed", "input": f"e{NUL}"}, {}),
    ]  # fmt: skip
    recorder = services.tracing.recorder
    try:
        async with client_for(services) as client:
            pushed = await client.post("/api/prompts/greet/versions", json=prompt, headers=auth)
            assert pushed.status_code == 201, pushed.text
            ids: list[str] = []
            for path, body, headers in poisoned:
                response = await client.post(path, json=body, headers={**auth, **headers})
                assert response.status_code < 500, (body, response.text)
                ids.append(response.headers["x-keel-trace-id"])
            upstream.reply = "fine"
            for _ in range(20):  # the traces after them
                response = await client.post("/v1/chat/completions", json=chat(), headers=auth)
                ids.append(response.headers["x-keel-trace-id"])
            await recorder.flush()
            stored = []
            for trace_id in ids:
                found = await client.get(f"/api/traces/{trace_id}", headers=auth)
                assert found.status_code == 200, (trace_id, found.text)
                stored.append(found.json())
    finally:
        await stop_services(services)
    assert recorder.written == len(ids)
    assert (recorder.quarantined, recorder.spill.spilled, recorder.dropped) == (0, 0, 0)
    for trace in stored:  # the same on both stores: U+FFFD where the NUL was
        assert not [s for s in values(trace) if NUL in s], trace
    by_position = dict(enumerate(stored))
    assert by_position[0]["user"] == f"u{NUL_STORED_AS}"
    assert by_position[1]["model"] == f"stub{NUL_STORED_AS}"
    # Chat input is stored as JSON text, where a NUL is the escape \u0000: kept as sent.
    assert '"hi\\u0000"' in by_position[2]["input"]
    assert by_position[3]["output"] == f"an answer with a {NUL_STORED_AS} in it"
    assert '"Say a\\u0000b"' in by_position[4]["input"]
    assert by_position[5]["metadata"] == {"tag": f"a{NUL_STORED_AS}b"}
    assert by_position[5]["session_id"] == f"s{NUL_STORED_AS}"
    assert by_position[6]["input"] == f"p{NUL_STORED_AS}"
    assert by_position[7]["input"] == f"e{NUL_STORED_AS}"
