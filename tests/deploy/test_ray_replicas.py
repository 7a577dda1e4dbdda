"""`keel deploy smollm2@1 --replicas 2 --on ray` against a real local Ray cluster: the real
SmolLM2 served by two Ray actors, concurrent requests reach both, and killing one actor
leaves the route serving while Ray restarts it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keel_process import KeelProcess, start_keel
from tests.support.ray_cluster import processes_titled, ray_head

pytestmark = pytest.mark.e2e
BODY = {"model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    root = tmp_path_factory.mktemp("ray-deploy")
    with ray_head(root / "head.log") as address:
        process = start_keel(
            root / "data",
            "--no-embeddings",
            env={"KEEL_RAY_ADDRESS": address, "KEEL_RAY_ACTORS": "1"},
        )
        try:
            yield process
        finally:
            process.stop()


def ask(keel: KeelProcess) -> int:
    response = httpx.post(f"{keel.base_url}/v1/chat/completions", json=BODY, timeout=120,
                          headers={"Authorization": f"Bearer {keel.api_key}"})  # fmt: skip
    return response.status_code


def deployment(keel: KeelProcess) -> dict[str, Any]:
    found: dict[str, Any] = {d["model"]: d for d in keel.api("GET", "/api/deployments")}
    return found["smollm2@1"]


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def test_two_ray_replicas_serve_concurrent_requests_and_survive_a_killed_actor(
    keel: KeelProcess,
) -> None:
    result = keel.cli("deploy", "smollm2@1", "--replicas", "2", "--on", "ray", "--wait", "240")
    assert result.returncode == 0, result.stderr + keel.log()[-3000:]
    assert "2 replica(s) ready on Ray" in result.stdout
    status = deployment(keel)
    assert status["on"] == "ray"
    actors = processes_titled("LlamaActor")
    assert len(actors) == 2
    servers = [p["pid"] for p in status["processes"]]
    # The llama.cpp servers are children of Ray's actors, not of Keel.
    assert sorted(parent_of(pid) for pid in servers) == sorted(actors)

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: ask(keel), range(12)))
    assert statuses == [200] * 12
    served = [p["served"] for p in deployment(keel)["processes"]]
    assert min(served) > 0, served  # both replicas answered

    victim = parent_of(servers[0])
    os.kill(victim, signal.SIGKILL)
    statuses = [ask(keel) for _ in range(6)]  # while Ray restarts it
    assert statuses == [200] * 6
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        now = deployment(keel)
        if now["ready"] == 2 and victim not in processes_titled("LlamaActor"):
            break
        time.sleep(0.5)
    assert now["ready"] == 2, now  # Ray brought the actor back, and its server is ready
    assert sum(p["restarts"] for p in now["processes"]) == 1
    assert ask(keel) == 200
