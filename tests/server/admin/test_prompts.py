from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from keel.server.services import Services

Gateway = tuple[httpx.AsyncClient, str]

V1: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Answer questions about {{ product }}."},
        {"role": "user", "content": "{{ question }}"},
    ],
    "variables": [
        {"name": "product", "description": "What we sell"},
        {"name": "question"},
    ],
    "config": {"model": "fake-model", "temperature": 0.2},
    "message": "first version",
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def services_of(client: httpx.AsyncClient) -> Services:
    services: Services = client._transport.app.state.services  # type: ignore[attr-defined]
    return services


def other_key(client: httpx.AsyncClient, role: str, project: str = "default") -> str:
    keys = services_of(client).keys
    project_id = keys.ensure_project(project)
    return keys.create_key(project_id=project_id, role=role, name=f"{project}-{role}")[1]


async def test_create_list_get_and_label(gateway: Gateway) -> None:
    client, key = gateway
    created = await client.post("/api/prompts/support/versions", json=V1, headers=auth(key))
    assert created.status_code == 201
    assert created.json()["created"] is True
    assert created.json()["version"]["version"] == 1
    assert created.json()["version"]["author"].startswith("key:")
    v2 = {**V1, "config": {"model": "fake-model", "temperature": 0.5}, "message": "warmer"}
    assert (await client.post("/api/prompts/support/versions", json=v2,
                              headers=auth(key))).status_code == 201  # fmt: skip
    moved = await client.put("/api/prompts/support/labels/production", json={"version": 1},
                             headers=auth(key))  # fmt: skip
    assert moved.json() == {"name": "support", "label": "production", "version": 1,
                            "previous_version": None}  # fmt: skip

    listed = (await client.get("/api/prompts", headers=auth(key))).json()["data"]
    assert [(p["name"], p["latest_version"], p["labels"]) for p in listed] == [
        ("support", 2, {"production": 1, "latest": 2})
    ]
    default = (await client.get("/api/prompts/support", headers=auth(key))).json()
    assert (default["version"], default["labels"]) == (1, ["production"])
    by_number = (await client.get("/api/prompts/support", params={"version": 2},
                                  headers=auth(key))).json()  # fmt: skip
    assert by_number["config"]["temperature"] == 0.5
    assert by_number["message"] == "warmer"
    versions = (await client.get("/api/prompts/support/versions", headers=auth(key))).json()
    assert [(v["version"], v["labels"]) for v in versions["data"]] == [
        (2, ["latest"]),
        (1, ["production"]),
    ]


async def test_pushing_the_same_content_again_reports_no_changes(gateway: Gateway) -> None:
    client, key = gateway
    await client.post("/api/prompts/support/versions", json=V1, headers=auth(key))
    again = await client.post("/api/prompts/support/versions",
                              json={**V1, "message": "again"}, headers=auth(key))  # fmt: skip
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["version"]["version"] == 1


async def test_diff_render_and_archive(gateway: Gateway) -> None:
    client, key = gateway
    await client.post("/api/prompts/support/versions", json=V1, headers=auth(key))
    v2 = {**V1, "messages": [{"role": "system", "content": "Be brief about {{ product }}."},
                             V1["messages"][1]]}  # fmt: skip
    await client.post("/api/prompts/support/versions", json=v2, headers=auth(key))
    diff = (await client.get("/api/prompts/support/diff", params={"from": 1, "to": 2},
                             headers=auth(key))).json()  # fmt: skip
    assert "-  content: Answer questions about {{ product }}." in diff["diff"]
    assert "+  content: Be brief about {{ product }}." in diff["diff"]

    preview = await client.post(
        "/api/prompts/support/render",
        json={"label": "latest", "variables": {"product": "Keel", "question": "Price?"}},
        headers=auth(key),
    )
    assert preview.status_code == 200
    assert preview.json()["version"] == 2
    assert preview.json()["messages"][0] == {"role": "system", "content": "Be brief about Keel."}
    assert preview.json()["config"] == {"model": "fake-model", "temperature": 0.2}

    archived = await client.post("/api/prompts/support/archive", headers=auth(key))
    assert archived.json()["archived"] is True
    assert (await client.get("/api/prompts", headers=auth(key))).json()["data"] == []
    listed = await client.get("/api/prompts", params={"include_archived": True}, headers=auth(key))
    assert listed.json()["data"][0]["name"] == "support"


@pytest.mark.parametrize(
    ("path", "body", "param", "fragment"),
    [
        ("/api/prompts/support/versions",
         {**V1, "messages": [{"role": "system", "content": "{% if %}"}]},
         "messages[0].content", "template error on line 1"),
        ("/api/prompts/support/versions",
         {**V1, "messages": [{"role": "system", "content": "{{ nope }}"}]},
         "messages[0].content", "undeclared variable(s) nope"),
        ("/api/prompts/support/versions", {**V1, "messages": []}, "messages", "at least 1"),
        ("/api/prompts/support/versions",
         {**V1, "variables": [{"name": "product", "type": "colour"}]}, "variables[0].type", ""),
        ("/api/prompts/support/versions",
         {**V1, "variables": [{"name": "n", "type": "integer", "default": "x"}]},
         "variables[0]", "must be integer"),
        ("/api/prompts/bad%20name/versions", V1, "name", ""),
        ("/api/prompts/support/labels/latest", {"version": 1}, "label", "cannot be moved"),
        ("/api/prompts/support/render", {"variables": {"question": "?"}}, "variables.product",
         "missing required variable 'product'"),
        ("/api/prompts/support/render",
         {"variables": {"product": ["x"], "question": "?"}}, "variables.product",
         "must be string (got array)"),
    ],
)  # fmt: skip
async def test_bad_input_is_a_400_naming_the_param(
    gateway: Gateway, path: str, body: dict[str, Any], param: str, fragment: str
) -> None:
    client, key = gateway
    await client.post("/api/prompts/support/versions", json=V1, headers=auth(key))
    await client.put("/api/prompts/support/labels/production", json={"version": 1},
                     headers=auth(key))  # fmt: skip
    method = "PUT" if "/labels/" in path else "POST"
    response = await client.request(method, path, json=body, headers=auth(key))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert fragment in error["message"]


async def test_unknown_prompts_versions_and_labels_are_404(gateway: Gateway) -> None:
    client, key = gateway
    await client.post("/api/prompts/support/versions", json=V1, headers=auth(key))
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/prompts/nope", {}),
        ("GET", "/api/prompts/support", {}),  # no production label yet
        ("GET", "/api/prompts/support", {"params": {"version": 5}}),
        ("GET", "/api/prompts/support/diff", {"params": {"from": 1, "to": 3}}),
        ("PUT", "/api/prompts/support/labels/production", {"json": {"version": 3}}),
        ("POST", "/api/prompts/nope/archive", {}),
    ]
    for method, path, kwargs in calls:
        response = await client.request(method, path, headers=auth(key), **kwargs)
        assert response.status_code == 404, (path, response.text)


async def test_another_projects_prompts_are_404_and_invisible(gateway: Gateway) -> None:
    client, key = gateway
    await client.post("/api/prompts/support/versions", json=V1, headers=auth(key))
    stranger = other_key(client, "admin", project="other")
    assert (await client.get("/api/prompts", headers=auth(stranger))).json()["data"] == []
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/prompts/support", {"params": {"label": "latest"}}),
        ("GET", "/api/prompts/support/versions", {}),
        ("PUT", "/api/prompts/support/labels/production", {"json": {"version": 1}}),
        ("POST", "/api/prompts/support/render", {"json": {"version": 1}}),
        ("POST", "/api/prompts/support/archive", {}),
    ]
    for method, path, kwargs in calls:
        response = await client.request(method, path, headers=auth(stranger), **kwargs)
        assert response.status_code == 404, (path, response.text)
    mine = await client.get("/api/prompts/support", params={"label": "latest"}, headers=auth(key))
    assert mine.status_code == 200


async def test_viewers_read_but_cannot_change_prompts(gateway: Gateway) -> None:
    client, key = gateway
    await client.post("/api/prompts/support/versions", json=V1, headers=auth(key))
    viewer = other_key(client, "viewer")
    assert (await client.get("/api/prompts", headers=auth(viewer))).status_code == 200
    refused = await client.post("/api/prompts/support/versions", json=V1, headers=auth(viewer))
    assert refused.status_code == 403
    developer = other_key(client, "developer")
    created = await client.post("/api/prompts/support/versions",
                                json={**V1, "message": "dev"}, headers=auth(developer))  # fmt: skip
    assert created.status_code == 200  # same content: accepted, no new version


ATTACKS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ product.__class__.__init__.__globals__['os'] }}",
    "{% include 'x' %}",
    "{% import 'x' as y %}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
    "{% for a in product %}{% for b in product %}{% for c in product %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ 'x' * 60000 ~ 'y' * 60000 }}",
    "{{ (9 ** 999) ** 999 }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ product|center(999999999) }}",
    "{{ product.ljust(999999999) }}",
    "{{ range(10000)|join('x' * 60000) }}",
    "{{ lipsum(999999) }}",
    "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
    "{% macro bomb() %}{{ bomb() }}{{ bomb() }}{% endmacro %}{{ bomb() }}",
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("template", ATTACKS)
async def test_template_injection_and_resource_attacks_are_refused(
    gateway: Gateway, template: str
) -> None:
    client, key = gateway
    body = {
        "messages": [{"role": "system", "content": template}],
        "variables": [{"name": "product", "default": "p" * 100}],
        "allow_extra_variables": True,
        "config": {"model": "fake-model"},
    }
    started = time.monotonic()
    created = await client.post("/api/prompts/attack/versions", json=body, headers=auth(key))
    if created.status_code == 400:
        refused = created  # caught when the version is created
    else:
        assert created.status_code == 201, created.text
        refused = await client.post(
            "/v1/chat/completions",
            json={"prompt": {"name": "attack", "label": "latest"}},
            headers=auth(key),
        )
        preview = await client.post("/api/prompts/attack/render", json={"label": "latest"},
                                    headers=auth(key))  # fmt: skip
        assert preview.status_code == 400, preview.text
    # A hang guard, not a benchmark: a runaway render would take minutes.
    assert time.monotonic() - started < 30
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["type"] == "invalid_request_error"
