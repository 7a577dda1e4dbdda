"""/readyz and /metrics show a dead upstream: its breaker, last error and failure rate."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.upstream import FakeUpstream
from tests.tracing.conftest import Gateway

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Say hi"}]}


async def fail_until_open(gateway: Gateway, upstream: FakeUpstream) -> None:
    client, key = gateway
    upstream.behaviour = "status:503"
    for _ in range(3):  # 3 attempts each (2 retries): the 5th failure opens the breaker
        response = await client.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=CHAT
        )
        assert response.status_code == 503


async def test_readyz_names_a_dead_upstream_and_stays_ready(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    client, _ = gateway
    healthy = (await client.get("/readyz")).json()
    assert healthy["status"] == "ready"
    assert healthy["unhealthy"] == []
    await fail_until_open(gateway, upstream)
    response = await client.get("/readyz")
    # Still ready (it serves other routes, and fails over), but degraded, saying why.
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready (degraded)"
    assert body["unhealthy"] == ["fake-model"]
    target = body["targets"]["fake-model"]
    assert target["state"] == "open"
    assert target["healthy"] is False
    assert target["failures_per_minute"] >= 5
    assert "503" in target["last_error"]


async def test_metrics_show_each_targets_health(gateway: Gateway, upstream: FakeUpstream) -> None:
    client, key = gateway
    await fail_until_open(gateway, upstream)
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    label = (("target", "fake-model"),)
    assert found[("keel_target_healthy", label)] == 0
    assert found[("keel_target_failures_per_minute", label)] >= 5
    assert found[("keel_target_consecutive_failures", label)] >= 5
    assert found[("keel_circuit_breaker_state", label)] == 2
