"""`from keel import Client` against a Keel served over HTTP (uvicorn, in a thread) with the
scriptable upstream: datasets, experiments, gates, comparisons and knowledge bases, and the
API's errors raised with the field they name."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from keel import Client
from keel.client import KeelAPIError
from keel.deploy.llamacpp import free_port
from keel.jobs.executor import ExecutorOptions
from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of a Keel served on a free port until the test ends."""
    ready = threading.Event()
    found: dict[str, object] = {}
    port = free_port()

    async def serve() -> None:
        upstream = FakeUpstream(echo=True)
        await upstream.start()
        services, key = build_services(tmp_path, upstream.base_url)
        system = job_system(services)
        system.executor.options = ExecutorOptions(heartbeat_seconds=0.05, poll_seconds=0.05)
        await system.start()
        app = create_app(services.settings, services=services)
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        found.update(key=key, server=server)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.01)
        ready.set()
        await task
        await system.stop()
        await stop_services(services)
        await upstream.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield f"http://127.0.0.1:{port}", str(found["key"])
    found["server"].should_exit = True  # type: ignore[attr-defined]
    thread.join(30)


def test_the_client_covers_datasets_experiments_and_comparisons(
    served: tuple[str, str], tmp_path: Path
) -> None:
    base, key = served
    with Client(base, key) as client:
        created = client.datasets.create(
            "quiz", [{"input": "Paris", "expected": "Paris"}, {"input": "Rome", "expected": "X"}]
        )
        assert (created.name, created.latest_version) == ("quiz", 1)
        file = tmp_path / "more.jsonl"
        file.write_text('{"input": "Oslo", "expected": "Oslo"}\n')
        assert client.datasets.upload("quiz", file).version == 2
        assert len(client.datasets.items("quiz")) == 3
        assert len(client.datasets.items("quiz", version=1)) == 2
        broken = tmp_path / "broken.jsonl"
        broken.write_text('{"input": "a"}\n{"input": \n')
        with pytest.raises(KeelAPIError) as caught:
            client.datasets.upload("quiz", broken)
        assert caught.value.status == 400
        assert caught.value.message.startswith("line 2:")
        assert client.datasets.get("quiz").latest_version == 2  # nothing half-made

        spec = {"name": "cap", "dataset": "quiz", "label": "main",
                "subjects": [{"model": "fake-model"}],
                "scorers": [{"type": "exact", "name": "accuracy"}]}  # fmt: skip
        (run,) = client.experiments.run(spec, timeout=60)
        assert run.state == "succeeded"
        assert run.metric("accuracy") == pytest.approx(2 / 3)
        assert [r.id for r in client.experiments.list()] == [run.id]
        report = client.experiments.gates(run.id, ["accuracy>=0.6", "accuracy>=0.9"])
        assert not report.passed
        assert [g["passed"] for g in report.gates] == [True, False]
        assert "<testsuites" in report.junit
        (again,) = client.experiments.run({**spec, "label": None}, timeout=60)
        comparison = client.comparisons.compare(["main", again.id])
        assert comparison["differences"][again.id]["accuracy"]["mean"] == 0.0
        with pytest.raises(KeelAPIError) as unknown:
            client.experiments.start({**spec, "scorers": [{"type": "bleurt"}]})
        assert unknown.value.param == "scorers[0].type"
        assert client.knowledge_bases.list() == []
        assert {s["type"] for s in client.experiments.scorers()} >= {"exact", "judge"}


def test_a_client_without_a_reachable_keel_says_so() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", "keel_sk_x_y") as client,
        pytest.raises(KeelAPIError, match="is 'keel serve' running"),
    ):
        client.datasets.list()
