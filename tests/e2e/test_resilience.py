"""Liveness under load, restart of the model server, and a clean shutdown."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.keel_process import KeelProcess, start_keel

pytestmark = pytest.mark.e2e


def _generate(keel: KeelProcess, done: threading.Event) -> None:
    try:
        with httpx.stream(
            "POST",
            f"{keel.base_url}/v1/chat/completions",
            json={
                "model": "smollm2",
                "stream": True,
                "max_tokens": 200,
                "temperature": 1.0,
                "messages": [{"role": "user", "content": "Write a long story about ships."}],
            },
            headers={"Authorization": f"Bearer {keel.api_key}"},
            timeout=120,
        ) as response:
            for _ in response.iter_lines():
                pass
    finally:
        done.set()


def test_healthz_answers_while_a_long_generation_runs(keel: KeelProcess) -> None:
    """The event loop stays free while llama.cpp generates: all 20 probes are answered
    before the generation ends (a blocked loop would hold them until it did)."""
    done = threading.Event()
    worker = threading.Thread(target=_generate, args=(keel, done))
    worker.start()
    time.sleep(0.5)  # let generation get going
    with httpx.Client(base_url=keel.base_url) as client:
        for _ in range(20):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.05)
        still_generating = not done.is_set()
        # Embeddings run on a worker thread of the gateway itself: the loop must stay free.
        embed = client.post(
            "/v1/embeddings",
            json={"model": "all-minilm-l6-v2", "input": ["some text"] * 64},
            headers={"Authorization": f"Bearer {keel.api_key}"},
            timeout=60,
        )
    worker.join()
    assert still_generating, "generation ended before the probes; make it longer"
    assert embed.status_code == 200


def test_killed_model_server_is_restarted_and_serving_resumes(keel: KeelProcess) -> None:
    children = keel.children()
    assert len(children) == 1, "expected exactly one llama.cpp child"
    os.kill(children[0], signal.SIGKILL)
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    with httpx.Client(base_url=keel.base_url, timeout=30) as client:
        # Wait on the supervisor's own record of the crash, counted when it saw the exit,
        # then on readiness, which only a new process that passed its self-test restores.
        # Catching the short not-ready window in between would race the restart.
        deadline = time.monotonic() + 90
        while True:
            ready = client.get("/readyz")
            check = ready.json()["checks"]["deployment:smollm2@1"]
            if (ready.status_code == 200 and check["crashes"] == 1) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert ready.status_code == 200, ready.text
        assert check["crashes"] == 1
        assert check["restarts"] == 1
        assert check["last_crash"]["signal"] == "SIGKILL"
        assert check["last_crash"]["phase"] == "serving"
        metrics = client.get("/metrics", headers=headers).text
        labels = 'deployment="smollm2@1",project="default"'
        assert f"keel_model_server_crashes_total{{{labels}}} 1.0" in metrics
        assert f'keel_model_server_state{{{labels},replica="0"}} 2.0' in metrics
        answer = client.post(
            "/v1/chat/completions",
            json={"model": "smollm2", "max_tokens": 8,
                  "messages": [{"role": "user", "content": "Say hi"}]},
            headers=headers,
        )  # fmt: skip
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"]
    assert keel.children() != children


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_leaves_no_orphan_model_server(tmp_path: Path, sig: int) -> None:
    keel = start_keel(tmp_path / "data", "--no-embeddings")
    children = keel.children()
    assert children
    # uvicorn re-raises the signal after a graceful shutdown: -sig or 128+sig are clean too.
    assert keel.stop(sig) in (0, -sig, 128 + sig)
    assert "Application shutdown complete" in keel.log()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"llama.cpp child {pid} outlived Keel"


def test_sigkilled_gateway_takes_its_model_server_along(tmp_path: Path) -> None:
    keel = start_keel(tmp_path / "data", "--no-embeddings")
    children = keel.children()
    keel.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in children)
