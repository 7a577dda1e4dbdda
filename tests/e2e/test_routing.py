"""Routes over real upstream processes: split accuracy, stickiness, failover, rollback."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.deploy.llamacpp import free_port
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.stub_server import StubProcess

pytestmark = pytest.mark.e2e
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def stubs() -> Iterator[tuple[StubProcess, StubProcess]]:
    a = StubProcess("a", free_port()).start()
    b = StubProcess("b", free_port()).start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def keel(
    tmp_path_factory: pytest.TempPathFactory, stubs: tuple[StubProcess, StubProcess]
) -> Iterator[KeelProcess]:
    data_dir: Path = tmp_path_factory.mktemp("routing") / "data"
    process = start_keel(
        data_dir, "--no-local-model", "--no-embeddings",
        env={"KEEL_BREAKER_FAILURES": "2", "KEEL_BREAKER_COOLDOWN": "1"},
    )  # fmt: skip
    a, b = stubs
    for stub in (a, b):
        process.api("PUT", f"/api/providers/{stub.name}",
                    {"kind": "openai_compat", "base_url": stub.base_url})  # fmt: skip
        process.api("POST", "/api/models",
                    {"name": "m", "provider": stub.name, "upstream_model": "stub"})  # fmt: skip
    yield process
    process.stop()


async def _targets(keel: KeelProcess, count: int, body: dict[str, object]) -> list[str]:
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    results: list[str] = []
    async with httpx.AsyncClient(base_url=keel.base_url, headers=headers, timeout=30) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                response = await client.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                results.append(response.headers["x-keel-target"])

        await asyncio.gather(*(worker(count // 16) for _ in range(16)))
    return results


def test_a_90_10_split_lands_within_3_points(keel: KeelProcess) -> None:
    keel.api("PUT", "/api/routes/chat", {"targets": {"m@1": 90, "m@2": 10}})
    targets = asyncio.run(_targets(keel, 2000, BODY))
    share = collections.Counter(targets)["m@1"] / len(targets)
    assert len(targets) == 2000
    assert abs(share - 0.90) <= 0.03, share


def test_sticky_user_always_lands_on_one_arm(keel: KeelProcess) -> None:
    keel.api("PUT", "/api/routes/chat",
             {"targets": {"m@1": 50, "m@2": 50}, "sticky": "user"})  # fmt: skip
    per_user = {}
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        targets = asyncio.run(_targets(keel, 48, {**BODY, "user": user}))
        assert len(set(targets)) == 1, (user, collections.Counter(targets))
        per_user[user] = targets[0]
    assert len(set(per_user.values())) == 2  # different users do spread over both arms


def test_rollback_restores_the_exact_previous_split_and_is_audited(keel: KeelProcess) -> None:
    keel.api("PUT", "/api/routes/rb", {"targets": {"m@1": 100}})
    body = {**BODY, "model": "rb"}
    assert set(asyncio.run(_targets(keel, 16, body))) == {"m@1"}
    assert keel.cli("routes", "set-split", "rb", "m@2=100").returncode == 0
    assert set(asyncio.run(_targets(keel, 16, body))) == {"m@2"}
    result = keel.cli("routes", "rollback", "rb")
    assert result.returncode == 0, result.stderr
    assert "m@1 100%" in result.stdout
    assert keel.api("GET", "/api/routes/rb")["targets"] == {"m@1": 100}
    assert set(asyncio.run(_targets(keel, 16, body))) == {"m@1"}  # the very next requests
    actions = [e["action"] for e in keel.api("GET", "/api/audit?target_id=rb")["data"]]
    assert actions[:2] == ["route.rollback", "route.split"]


def test_killing_an_upstream_mid_load_fails_no_request(
    keel: KeelProcess, stubs: tuple[StubProcess, StubProcess]
) -> None:
    a, _ = stubs
    keel.api("PUT", "/api/routes/ft", {"targets": {"m@1": 50, "m@2": 50}})
    body = {**BODY, "model": "ft"}
    statuses: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        headers = {"Authorization": f"Bearer {keel.api_key}"}
        with httpx.Client(base_url=keel.base_url, headers=headers, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v1/chat/completions", json=body)
                statuses.append((time.monotonic(), response.status_code,
                                 response.headers.get("x-keel-target", "")))  # fmt: skip

    workers = [threading.Thread(target=load) for _ in range(8)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    a.kill()
    killed_at = time.monotonic()
    time.sleep(2.0)
    assert keel.api("GET", "/api/routes/ft")["breakers"]["m@1"] in ("open", "half_open")
    stop.set()
    for worker in workers:
        worker.join()
    failures = [s for s in statuses if s[1] != 200]
    assert failures == []
    after = [target for at, _, target in statuses if at > killed_at + 0.2]
    assert after, "load continued after the kill"
    assert set(after) == {"m@2"}  # the dead upstream got no successful traffic

    # Back on its port, it rejoins once a probe succeeds (cool-down is 1 s here).
    a.start()
    deadline = time.monotonic() + 15
    rejoined = False
    while time.monotonic() < deadline and not rejoined:
        rejoined = "m@1" in asyncio.run(_targets(keel, 32, body))
    assert rejoined
    assert keel.api("GET", "/api/routes/ft")["breakers"]["m@1"] == "closed"


def test_export_then_apply_is_a_no_op_and_apply_twice_says_no_changes(
    keel: KeelProcess, tmp_path: Path
) -> None:
    keel.api("PUT", "/api/routes/exported", {"targets": {"m@1": 70, "m@2": 30}})
    exported = tmp_path / "keel.yaml"
    result = keel.cli("export", "-o", str(exported))
    assert result.returncode == 0, result.stderr
    text = exported.read_text()
    assert "m@1" in text
    assert "routes:" in text
    again = keel.cli("apply", "-f", str(exported))
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout
