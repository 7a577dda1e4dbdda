"""Bad input on /api: bodies that cannot be parsed, and NUL characters in any text field.

The NUL sweep is built from the app's own OpenAPI schema, so a route or field added later
is swept too. It runs on SQLite (which would store the NUL silently) and on PostgreSQL
(which would fail the statement: a 500).
"""

from __future__ import annotations

import copy
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import inspect, text

from keel.server.admin.text import find_nul
from keel.server.app import create_app
from keel.server.services import Services, stop_services
from tests.support.app import build_services

NUL = "\x00"
Api = tuple[httpx.AsyncClient, Services, dict[str, str]]


@pytest.fixture
async def api(tmp_path: Path, database_url: str) -> AsyncIterator[Api]:
    services, key = build_services(tmp_path, "http://127.0.0.1:9/v1", database_url=database_url)
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        yield client, services, {"Authorization": f"Bearer {key}"}
    await stop_services(services)


def row_counts(services: Services) -> dict[str, int]:
    """Rows in every table of the store: what a refused request must leave unchanged."""
    engine = services.database.engine
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one()
            for table in inspect(engine).get_table_names()
        }


# -- bodies that cannot be parsed ------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_json_nested_too_deep_says_so(api: Api) -> None:
    client, _, headers = api
    depth = 100_000
    body = b"[" * depth + b"]" * depth
    response = await client.put("/api/routes/x", content=body, headers=headers)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "nested deeper than" in message
    assert "send a flatter JSON object" in message


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_invalid_utf8_names_the_byte_and_the_fix(api: Api) -> None:
    client, _, headers = api
    body = b'{"kind": "openai_compat", "base_url": "http://h\xff/v1"}'
    response = await client.put("/api/providers/x", content=body, headers=headers)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    position = body.index(b"\xff")
    assert f"not valid UTF-8 (byte {position}" in message
    assert "send UTF-8 encoded JSON" in message


# -- NUL characters ---------------------------------------------------------------------------


async def test_a_nul_in_a_provider_url_or_a_key_name_is_refused_and_nothing_is_stored(
    api: Api,
) -> None:
    client, services, headers = api
    before = row_counts(services)
    provider = {"kind": "openai_compat", "base_url": f"http://h{NUL}ost/v1"}
    refused = await client.put("/api/providers/p", json=provider, headers=headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "base_url"
    assert "NUL" in refused.json()["error"]["message"]
    refused = await client.post("/api/keys", json={"name": f"ci{NUL}", "role": "app"},
                                headers=headers)  # fmt: skip
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "name"
    assert row_counts(services) == before
    assert (await client.get("/api/providers/p", headers=headers)).status_code == 404

    # Without the NUL the same calls work: the NUL was the only thing wrong.
    provider["base_url"] = "http://host/v1"
    assert (await client.put("/api/providers/p", json=provider, headers=headers)).is_success
    created = await client.post("/api/keys", json={"name": "ci", "role": "app"}, headers=headers)
    assert created.status_code == 201, created.text


async def test_a_nul_in_any_string_field_of_any_admin_body_is_a_4xx_naming_it(api: Api) -> None:
    client, services, headers = api
    schema = (await client.get("/openapi.json")).json()
    cases = list(nul_cases(schema))
    assert len({(method, path) for method, path, _, _ in cases}) >= 15, "expected the admin routes"
    before = row_counts(services)
    wrong = []
    for method, path, body, param in cases:
        response = await client.request(method, path, json=body, headers=headers)
        error = response.json().get("error", {}) if response.status_code < 500 else {}
        if response.status_code != 400 or error.get("param") != param:
            wrong.append(f"{method} {path} {param}: {response.status_code} {response.text[:200]}")
    assert wrong == []
    assert row_counts(services) == before


async def test_a_nul_in_a_path_or_query_parameter_is_refused(api: Api) -> None:
    client, _, headers = api
    response = await client.get("/api/routes/a%00b", headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "name"
    response = await client.get("/api/keys", params={"project": f"p{NUL}"}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "project"


async def test_a_key_is_needed_before_the_body_is_looked_at(api: Api) -> None:
    client, _, _ = api
    response = await client.post("/api/keys", json={"name": NUL})
    assert response.status_code == 401


def test_find_nul_names_the_field_the_way_errors_do() -> None:
    assert find_nul({"a": [{"b": "x"}, {"c": f"y{NUL}"}]}) == "a[1].c"
    assert find_nul({"targets": {f"m{NUL}@1": 5}}) == "targets.m\\u0000@1"
    assert find_nul({"a": ["ok", 1, None, True]}) is None
    deep: Any = f"{NUL}"
    for _ in range(5000):  # deeper than recursion would go
        deep = [deep]
    assert find_nul(deep) == "[0]" * 5000


# -- building the sweep from the OpenAPI schema ----------------------------------------------


def nul_cases(openapi: dict[str, Any]) -> Iterator[tuple[str, str, Any, str]]:
    """(method, path, body, param) for every string (and map key) of every /api JSON body,
    each case with a NUL in that one place and plain text everywhere else."""
    components = openapi.get("components", {}).get("schemas", {})
    for path, operations in openapi["paths"].items():
        if not path.startswith("/api/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            skeleton = example(content["application/json"]["schema"], components)
            for where, kind in places(skeleton, ()):
                body = copy.deepcopy(skeleton)
                param = with_nul(body, where, kind)
                yield method.upper(), concrete, body, param


def example(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A value of `schema` with every property present and every string 'x'."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    if depth > 8:
        return None
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            branches = [example(s, components, depth + 1) for s in schema[key]]
            # The branch with the most text in it sweeps the most places.
            return max(branches, key=lambda value: len(list(places(value, ()))))
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "string":
        return "x"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        return [example(schema.get("items", {"type": "string"}), components, depth + 1)]
    if kind == "object" or "properties" in schema:
        value = {
            name: example(sub, components, depth + 1)
            for name, sub in schema.get("properties", {}).items()
        }
        extra = schema.get("additionalProperties")
        if extra is not False and not schema.get("properties"):
            entry = example(extra if isinstance(extra, dict) else {}, components, depth + 1)
            return Map(k=entry)
        return value
    return "x"  # no type: anything goes, text included


class Map(dict[str, Any]):
    """A JSON object whose keys are data (a map), not field names: its keys are swept too."""


Where = tuple[str | int, ...]


def places(value: Any, where: Where) -> Iterator[tuple[Where, str]]:
    if isinstance(value, str):
        yield where, "value"
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(value, Map):
                yield (*where, key), "key"
            yield from places(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from places(item, (*where, index))


def with_nul(body: Any, where: Where, kind: str) -> str:
    """Put a NUL at `where` (in the value, or in the map key); return the param named."""
    parent = body
    for step in where[:-1]:
        parent = parent[step]
    last = where[-1]
    if kind == "key":
        assert isinstance(last, str)
        parent[f"{last}{NUL}"] = parent.pop(last)
        where = (*where[:-1], f"{last}\\u0000")
    else:
        parent[last] = f"{parent[last]}{NUL}"
    param = ""
    for step in where:
        param += f"[{step}]" if isinstance(step, int) else (f".{step}" if param else str(step))
    return param


def test_the_sweep_puts_one_nul_per_case() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"},
              "b": {"type": "array", "items": {"type": "object", "additionalProperties":
                    {"type": "string"}}}}}  # fmt: skip
    openapi = {"paths": {"/api/t": {"put": {"requestBody": {"content": {
        "application/json": {"schema": schema}}}}}}}  # fmt: skip
    cases = list(nul_cases(openapi))
    assert [param for *_, param in cases] == ["a", "b[0].k\\u0000", "b[0].k"]
    for *_, body, _param in cases:
        assert orjson.dumps(body).count(b"\\u0000") == 1
