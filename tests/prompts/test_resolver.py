from __future__ import annotations

from typing import Any

import httpx
import pytest

from keel.errors import InvalidRequest
from keel.prompts.resolver import parse_model_reference
from keel.server.services import Services
from tests.support.upstream import FakeUpstream

Gateway = tuple[httpx.AsyncClient, str]
CHAT = "/v1/chat/completions"

SUPPORT: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You support {{ product }} customers. ({{ tone }})"},
        {"role": "assistant", "content": "How can I help?"},
    ],
    "variables": [{"name": "product"}, {"name": "tone", "default": "friendly"}],
    "config": {"model": "fake-model", "temperature": 0.3, "max_tokens": 64, "stop": ["END"]},
}


def services_of(client: httpx.AsyncClient) -> Services:
    services: Services = client._transport.app.state.services  # type: ignore[attr-defined]
    return services


async def push(client: httpx.AsyncClient, key: str, name: str, body: dict[str, Any]) -> int:
    response = await client.post(
        f"/api/prompts/{name}/versions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code in (200, 201), response.text
    number: int = response.json()["version"]["version"]
    return number


async def label(client: httpx.AsyncClient, key: str, name: str, label: str, version: int) -> None:
    response = await client.put(
        f"/api/prompts/{name}/labels/{label}",
        json={"version": version},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text


def with_system(text: str) -> dict[str, Any]:
    return {**SUPPORT, "messages": [{"role": "system", "content": text}, *SUPPORT["messages"][1:]]}


@pytest.fixture
async def support(gateway: Gateway) -> Gateway:
    client, key = gateway
    await push(client, key, "support", SUPPORT)
    await label(client, key, "support", "production", 1)
    return gateway


async def chat(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})


async def test_rendered_messages_come_first_then_the_clients(
    support: Gateway, upstream: FakeUpstream
) -> None:
    client, key = support
    response = await chat(client, key, {
        "prompt": {"name": "support", "variables": {"product": "Keel"}},
        "messages": [{"role": "user", "content": "My key stopped working."}],
    })  # fmt: skip
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "You support Keel customers. (friendly)"},
        {"role": "assistant", "content": "How can I help?"},
        {"role": "user", "content": "My key stopped working."},
    ]
    assert "prompt" not in sent
    assert response.headers["x-keel-prompt"] == "support"
    assert response.headers["x-keel-prompt-version"] == "1"


async def test_the_versions_config_applies_unless_the_request_sets_the_field(
    support: Gateway, upstream: FakeUpstream
) -> None:
    client, key = support
    await chat(client, key, {"prompt": {"name": "support", "variables": {"product": "K"}}})
    sent = upstream.requests[-1]
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.3, 64, ["END"])
    assert sent["model"] == "upstream-model"  # fake-model, as the prompt's config names it
    await chat(client, key, {
        "model": "fake-model", "temperature": 0.9, "stop": "STOP",
        "prompt": {"name": "support", "variables": {"product": "K"}},
    })  # fmt: skip
    sent = upstream.requests[-1]
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.9, 64, "STOP")


async def test_model_form_with_prompt_variables_for_clients_without_extra_fields(
    support: Gateway, upstream: FakeUpstream
) -> None:
    client, key = support
    await push(client, key, "support", with_system("Version two for {{ product }}."))
    for model, expected in [
        ("prompt:support", "You support Keel customers. (friendly)"),
        ("prompt:support@production", "You support Keel customers. (friendly)"),
        ("prompt:support@2", "Version two for Keel."),
        ("prompt:support@latest", "Version two for Keel."),
    ]:
        response = await chat(client, key, {
            "model": model, "prompt_variables": {"product": "Keel"},
            "messages": [{"role": "user", "content": "hi"}],
        })  # fmt: skip
        assert response.status_code == 200, response.text
        sent = upstream.requests[-1]
        assert sent["messages"][0]["content"] == expected
        assert "prompt_variables" not in sent
        assert response.json()["model"] == "fake-model"


async def test_a_label_move_is_visible_on_the_next_request(
    support: Gateway, upstream: FakeUpstream
) -> None:
    client, key = support
    body = {"prompt": {"name": "support", "variables": {"product": "Keel"}}}
    await chat(client, key, body)  # warms the cache
    await push(client, key, "support", with_system("Second version."))
    await label(client, key, "support", "production", 2)
    response = await chat(client, key, body)
    assert response.headers["x-keel-prompt-version"] == "2"
    assert upstream.requests[-1]["messages"][0]["content"] == "Second version."
    await label(client, key, "support", "production", 1)  # rollback
    response = await chat(client, key, body)
    assert response.headers["x-keel-prompt-version"] == "1"
    assert upstream.requests[-1]["messages"][0]["content"].startswith("You support Keel")


async def test_repeated_requests_are_served_from_the_cache(
    support: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, key = support
    service = services_of(client).prompts
    assert service is not None
    reads: list[str] = []
    for method in ("pointers", "compiled"):
        original = getattr(service, method)

        def counted(*args: Any, _original: Any = original, _name: str = method) -> Any:
            reads.append(_name)
            return _original(*args)

        monkeypatch.setattr(service, method, counted)
    body = {"prompt": {"name": "support", "variables": {"product": "Keel"}}}
    for _ in range(5):
        assert (await chat(client, key, body)).status_code == 200
    assert reads == ["pointers", "compiled"]


async def test_a_new_prompt_is_found_after_an_unknown_name_was_asked_for(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    body = {"prompt": {"name": "later", "label": "latest", "variables": {"product": "K"}}}
    missing = await chat(client, key, body)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "prompt_not_found"
    await push(client, key, "later", SUPPORT)
    assert (await chat(client, key, body)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"prompt": {"name": "support"}}, 400, "prompt.variables.product",
         "missing required variable 'product'"),
        ({"prompt": {"name": "support", "variables": {"product": 3}}}, 400,
         "prompt.variables.product", "must be string (got integer)"),
        ({"prompt": {"name": "support", "variables": {"product": "K", "x": 1}}}, 400,
         "prompt.variables.x", "unknown variable(s) 'x'"),
        ({"model": "prompt:support", "prompt_variables": {}}, 400,
         "prompt_variables.product", "missing required variable"),
        ({"prompt": {"name": "support", "label": "production", "version": 1}}, 400, "prompt",
         "either prompt.label or prompt.version"),
        ({"prompt": {"name": "nope"}}, 404, "prompt", "no prompt named 'nope'"),
        ({"prompt": {"name": "support", "label": "staging"}}, 404, "prompt",
         "no label 'staging'"),
        ({"prompt": {"name": "support", "version": 9}}, 404, "prompt", "no version 9"),
        ({"model": "prompt:support@"}, 400, "model", "write prompt:NAME"),
        ({"model": "prompt:support", "prompt": {"name": "support"}}, 400, "model",
         "not both"),
        ({"prompt": {"name": "support"}, "prompt_variables": {"product": "K"}}, 400,
         "prompt_variables", "prompt.variables"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", "'model' is required"),
        ({"model": "fake-model"}, 400, "messages", "'messages' is required"),
    ],
)  # fmt: skip
async def test_bad_prompt_references_get_a_clear_error_naming_the_param(
    support: Gateway, body: dict[str, Any], status: int, param: str, fragment: str
) -> None:
    client, key = support
    response = await chat(client, key, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert fragment in error["message"]


async def test_a_prompt_without_a_model_and_a_request_without_one_is_a_400(
    gateway: Gateway,
) -> None:
    client, key = gateway
    await push(client, key, "modelless", {"messages": [{"role": "system", "content": "hi"}]})
    response = await chat(client, key, {"prompt": {"name": "modelless", "label": "latest"}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert "set config.model in the prompt" in response.json()["error"]["message"]


async def test_an_archived_prompt_is_refused(support: Gateway) -> None:
    client, key = support
    body = {"prompt": {"name": "support", "variables": {"product": "K"}}}
    assert (await chat(client, key, body)).status_code == 200
    await client.post("/api/prompts/support/archive", headers={"Authorization": f"Bearer {key}"})
    response = await chat(client, key, body)
    assert response.status_code == 404
    assert "archived" in response.json()["error"]["message"]


async def test_another_projects_prompt_is_not_found(support: Gateway) -> None:
    client, _ = support
    keys = services_of(client).keys
    project = keys.ensure_project("other")
    _, other_key = keys.create_key(project_id=project, role="app", name="other-app")
    body = {"prompt": {"name": "support", "variables": {"product": "K"}}}
    response = await chat(client, other_key, body)
    assert response.status_code == 404


async def test_streams_carry_the_prompt_headers(support: Gateway, upstream: FakeUpstream) -> None:
    client, key = support
    body = {"prompt": {"name": "support", "variables": {"product": "K"}}, "stream": True}
    async with client.stream(
        "POST", CHAT, json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-keel-prompt-version"] == "1"
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert text.rstrip().endswith("data: [DONE]")
    assert upstream.requests[-1]["messages"][0]["content"].startswith("You support K")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("prompt:support", ("support", None, None)),
        ("prompt:support@production", ("support", "production", None)),
        ("prompt:support@12", ("support", None, 12)),
    ],
)
def test_model_references_parse(model: str, expected: tuple[str, str | None, int | None]) -> None:
    assert parse_model_reference(model) == expected


@pytest.mark.parametrize("model", ["prompt:", "prompt:a@", "prompt:a@Bad!", "prompt:a@0"])
def test_malformed_model_references_are_refused(model: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_model_reference(model)


async def test_legacy_completions_keep_their_own_prompt_field(
    support: Gateway, upstream: FakeUpstream
) -> None:
    client, key = support
    response = await client.post(
        "/v1/completions",
        json={"model": "fake-model", "prompt": "support"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    assert upstream.requests[-1]["prompt"] == "support"
    assert "x-keel-prompt" not in response.headers
