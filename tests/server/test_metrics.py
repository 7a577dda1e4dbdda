"""GET /metrics: Prometheus text for requests, latency, TTFT, tokens, breakers and the queue."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.upstream import FakeUpstream
from tests.tracing.conftest import Gateway, services_of

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Say hi"}]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_tokens_and_show_breakers(gateway: Gateway) -> None:
    client, key = gateway
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/metrics")).status_code == 401
    for stream in (False, True):
        response = await client.post("/v1/chat/completions", headers=headers,
                                     json={**CHAT, "stream": stream})  # fmt: skip
        assert response.status_code == 200
    await services_of(client).tracing.recorder.flush()

    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    route = ("route", "fake-model")
    ok = (("operation", "chat"), route, ("status", "200"))
    assert found[("keel_requests_total", ok)] == 2
    assert found[("keel_request_duration_seconds_count", (("operation", "chat"), route))] == 2
    assert found[("keel_time_to_first_token_seconds_count", (route,))] == 1
    assert found[("keel_tokens_total", (("direction", "input"), route))] == 14
    assert found[("keel_circuit_breaker_state", (("target", "fake-model"),))] == 0
    assert found[("keel_trace_queue_depth", ())] == 0


async def test_upstream_errors_are_counted_by_type(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, key = gateway
    upstream.behaviour = "status:503"
    headers = {"Authorization": f"Bearer {key}"}
    response = await client.post("/v1/chat/completions", headers=headers, json=CHAT)
    assert response.status_code == 503
    await services_of(client).tracing.recorder.flush()
    text = (await client.get("/metrics", headers=headers)).text
    found = samples(text)
    errors = found[("keel_upstream_errors_total",
                    (("target", "fake-model"), ("type", "service_unavailable")))]  # fmt: skip
    assert errors >= 1


async def test_metrics_need_a_key_with_a_read_permission(gateway: Gateway) -> None:
    client, _ = gateway
    keys = services_of(client).keys
    project = keys.ensure_project()
    for role, status in (("app", 403), ("viewer", 200)):
        _, key = keys.create_key(project_id=project, role=role, name=role)
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == status, role


async def test_metrics_are_the_operators_not_another_projects(gateway: Gateway) -> None:
    # The metrics name every project's routes and count their traffic: a tenant's admin
    # must not read them (docs/security.md: a project's routes are invisible to others).
    client, admin = gateway
    headers = {"Authorization": f"Bearer {admin}"}
    assert (await client.post("/v1/chat/completions", headers=headers, json=CHAT)).is_success
    keys = services_of(client).keys
    other = keys.ensure_project("shop")
    _, shop_admin = keys.create_key(project_id=other, role="admin", name="shop admin")
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {shop_admin}"})
    assert response.status_code == 403
    message = response.json()["error"]["message"]
    assert "'metrics:read' in the 'default' project" in message
    assert "fake-model" not in response.text
    assert (await client.get("/metrics", headers=headers)).status_code == 200
