"""A gateway whose Ray cluster goes away keeps serving: Ray ends a driver process whose
cluster has not answered for 60 s unless told otherwise, and `keel serve` with
KEEL_RAY_ADDRESS is such a driver (keel/ray_link.py). In a module of its own: it stops the
cluster it starts."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai

from tests.jobs.conftest import SlowEcho
from tests.jobs.test_ray import actor_pids, serve
from tests.support.ray_cluster import ray_head

RAY_DEFAULT_RECONNECT_S = 60  # Ray's gcs_rpc_server_reconnect_timeout_s


def test_the_gateway_outlives_its_ray_cluster(tmp_path: Path, stub: SlowEcho) -> None:
    with ray_head(tmp_path / "head.log") as address:
        keel = serve(tmp_path / "data", stub, address)
        try:
            assert f"Ray actors at {address}" in keel.log()  # joined the cluster at start
            deadline = time.monotonic() + 60
            while len(actor_pids()) < 2 and time.monotonic() < deadline:  # its actors run there
                time.sleep(0.2)
            ray = httpx.get(f"{keel.base_url}/readyz").json()["checks"]["ray"]
            assert ray["state"] == "reachable", ray
            assert ray["address"].rsplit(":", 1)[1] == address.rsplit(":", 1)[1], ray  # its GCS
        except BaseException:
            keel.stop()
            raise
    try:  # the cluster is gone now
        lost_at = time.monotonic()
        sdk = openai.OpenAI(api_key=keel.api_key, base_url=f"{keel.base_url}/v1", max_retries=0)
        answers = 0
        while time.monotonic() - lost_at < RAY_DEFAULT_RECONNECT_S + 15:
            assert keel.process.poll() is None, keel.log()[-3000:]
            reply = sdk.chat.completions.create(
                model="stub-model", messages=[{"role": "user", "content": f"still there {answers}"}]
            )
            assert reply.choices[0].message.content == f"still there {answers}"
            answers += 1
            time.sleep(1)
        ready = httpx.get(f"{keel.base_url}/readyz")
        assert ready.status_code == 200  # still serving: ready, degraded
        assert ready.json()["status"] == "ready (degraded)"
        assert ready.json()["checks"]["ray"]["state"] == "unreachable"
    finally:
        keel.stop()
    assert answers > RAY_DEFAULT_RECONNECT_S
    # Stopped the usual way, not cut short (Ray's signal handler then ends the process with
    # SIGTERM's status, as with a live cluster).
    assert "Application shutdown complete" in keel.log()
