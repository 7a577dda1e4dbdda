"""Local deployments of the real SmolLM2: replicas, load balancing, crash and undeploy."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.keel_process import KeelProcess, start_keel

pytestmark = pytest.mark.e2e
BODY = {"model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    process = start_keel(tmp_path_factory.mktemp("deploy") / "data", "--no-embeddings")
    yield process
    process.stop()


def ask(keel: KeelProcess) -> int:
    response = httpx.post(f"{keel.base_url}/v1/chat/completions", json=BODY, timeout=60,
                          headers={"Authorization": f"Bearer {keel.api_key}"})  # fmt: skip
    return response.status_code


def deployment(keel: KeelProcess, model: str = "smollm2@1") -> dict:  # type: ignore[type-arg]
    return {d["model"]: d for d in keel.api("GET", "/api/deployments")}[model]


def test_two_replicas_share_concurrent_requests(keel: KeelProcess) -> None:
    result = keel.cli("deploy", "smollm2@1", "--replicas", "2")
    assert result.returncode == 0, result.stderr
    assert "2 replica(s) ready" in result.stdout
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: ask(keel), range(12)))
    assert statuses == [200] * 12
    served = [p["served"] for p in deployment(keel)["processes"]]
    assert len(served) == 2
    assert min(served) > 0, served  # least-outstanding spread the load over both


def test_killing_a_replica_leaves_the_route_serving(keel: KeelProcess) -> None:
    before = deployment(keel)
    assert before["ready"] == 2
    victim = before["processes"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    statuses = [ask(keel) for _ in range(10)]  # while it restarts
    assert statuses == [200] * 10
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = deployment(keel)
        if now["ready"] == 2 and now["processes"][0]["pid"] != victim:
            break
        time.sleep(0.2)
    assert now["ready"] == 2
    assert now["processes"][0]["restarts"] == 1


def test_undeploy_stops_the_processes_and_says_how_to_redeploy(keel: KeelProcess) -> None:
    pids = [p["pid"] for p in deployment(keel)["processes"]]
    result = keel.cli("undeploy", "smollm2@1")
    assert result.returncode == 0, result.stderr
    time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    response = httpx.post(f"{keel.base_url}/v1/chat/completions", json=BODY, timeout=30,
                          headers={"Authorization": f"Bearer {keel.api_key}"})  # fmt: skip
    assert response.status_code == 503
    assert "keel deploy smollm2@1" in response.json()["error"]["message"]
    assert keel.cli("deploy", "smollm2@1").returncode == 0
    assert ask(keel) == 200
