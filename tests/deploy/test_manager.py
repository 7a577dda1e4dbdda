"""A deployment whose model server crashes at its first inference: crashlooping, said why,
never without a process or a scheduled restart, and back in service once the crash stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keel.deploy.manager import DeploymentManager, ServerOptions, Wanted
from keel.deploy.metrics import DeploymentMetrics
from keel.errors import ServiceUnavailable
from tests.deploy.conftest import FAST, Standin, wait_for

CHAT = {"model": "standin", "messages": [{"role": "user", "content": "Say hi"}]}


def metric_samples(manager: DeploymentManager) -> dict[tuple[str, tuple[str, ...]], float]:
    registry = CollectorRegistry()
    registry.register(DeploymentMetrics(manager))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(str(v) for _, v in sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_crashlooping_deployment_says_why_and_recovers_without_restarting_keel(
    tmp_path: Path, standin: Standin
) -> None:
    manager = DeploymentManager(
        ServerOptions(data_dir=tmp_path, ready_timeout=60, restart=FAST, launcher=standin.launcher)
    )
    unguarded: list[str] = []  # states seen with neither a process nor a scheduled start
    sampled = 0
    sampling = True

    async def sample() -> None:
        nonlocal sampled
        while sampling:
            pool = manager.pool("p", "standin@1")
            for replica in pool.replicas if pool else []:
                server = replica.server
                sampled += 1
                held = server.pid is not None or server.next_restart_at is not None
                if server.state != "stopped" and not held:
                    unguarded.append(server.state)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        want = Wanted("p", "standin@1", tmp_path / "standin.gguf", "standin", replicas=1)
        await asyncio.gather(*await manager.reconcile([want]))  # the first start fails
        pool = manager.pool("p", "standin@1")
        assert pool is not None
        replica = pool.replicas[0]
        await wait_for(lambda: pool.state() == "crashlooping")

        check = manager.readiness()["deployment:standin@1"]
        assert check["ready"] is False
        assert check["state"] == "crashlooping"
        crash = check["last_crash"]
        assert isinstance(crash, dict)
        assert crash["signal"] == "SIGSEGV"
        assert crash["exit_code"] == -11
        assert "killed by SIGSEGV" in crash["cause"]
        tail = crash["log_tail"]
        assert any("standin: crashing on /v1/completions" in line for line in tail), tail
        assert isinstance(check["crashes"], int)
        assert check["crashes"] >= FAST.crashloop_crashes
        found = metric_samples(manager)
        crashes = found[("keel_model_server_crashes_total", ("standin@1", "p"))]
        assert crashes >= FAST.crashloop_crashes
        assert found[("keel_model_server_state", ("standin@1", "p", "0"))] == 4
        listed = manager.status("p")[0]
        assert listed["state"] == "crashlooping"
        assert listed["replicas"][0]["last_crash"]["signal"] == "SIGSEGV"

        with pytest.raises(ServiceUnavailable, match="SIGSEGV"):
            await pool.send("chat/completions", CHAT)

        standin.crash_flag.unlink()  # the model stops crashing; nobody restarts anything
        await wait_for(lambda: pool.state() == "ready")
        answer = await pool.send("chat/completions", CHAT)
        assert answer.body["choices"][0]["message"]["content"] == "ok"
        assert manager.pool("p", "standin@1") is pool
        assert pool.replicas[0] is replica
        assert manager.readiness()["deployment:standin@1"]["ready"] is True
        assert metric_samples(manager)[("keel_model_server_state", ("standin@1", "p", "0"))] == 2
    finally:
        sampling = False
        await sampler
        await manager.stop_all()
    assert sampled > 0
    assert not unguarded, unguarded
