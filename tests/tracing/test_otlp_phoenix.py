"""OTLP export into an independent receiver: Arize Phoenix, run as its own process.

Opt-in, since Phoenix is a large install of its own: set KEEL_TEST_PHOENIX to its
`phoenix` executable (e.g. from `python -m venv /tmp/phoenix && /tmp/phoenix/bin/pip
install arize-phoenix`). Without it the test is skipped and says why.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.deploy.llamacpp import free_port
from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

PHOENIX = os.environ.get("KEEL_TEST_PHOENIX", "")


def start_phoenix(work_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(free_port()),
           "PHOENIX_HOST": "127.0.0.1", "PHOENIX_WORKING_DIR": str(work_dir)}  # fmt: skip
    log = (work_dir / "phoenix.log").open("wb")
    process = subprocess.Popen([PHOENIX, "serve"], env=env, stdout=log, stderr=log,
                               start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, (work_dir / "phoenix.log").read_text()[-2000:]
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("Phoenix did not start within 120 s")


def phoenix_spans(base: str, trace_id: str) -> dict[str, dict[str, Any]]:
    """Spans of one trace as Phoenix stored them, by name (waits for its ingestion)."""
    deadline = time.monotonic() + 30
    while True:
        data = httpx.get(f"{base}/v1/projects/default/spans", params={"limit": 100}).json()
        found = {s["name"]: s for s in data["data"] if s["context"]["trace_id"] == trace_id}
        if "chat fake-model" in found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.skipif(not PHOENIX, reason="set KEEL_TEST_PHOENIX to a phoenix executable")
async def test_phoenix_receives_the_spans_with_gen_ai_attributes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    process, base = await asyncio.to_thread(start_phoenix, tmp_path)
    try:
        services, key = build_services(tmp_path / "keel", upstream.base_url, otlp_endpoint=base)
        app = create_app(services.settings, services=services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://keel"
        ) as client:
            response = await client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "fake-model", "stream": True, "max_tokens": 9,
                      "messages": [{"role": "user", "content": "Say hi"}]},
            )  # fmt: skip
        trace_id = response.headers["x-keel-trace-id"]
        await services.tracing.recorder.flush()
        assert services.tracing.exporter is not None
        assert await asyncio.to_thread(services.tracing.exporter.flush)
        await stop_services(services)
        spans = await asyncio.to_thread(phoenix_spans, base, trace_id)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)

    root = spans["chat fake-model"]["attributes"]
    assert root["gen_ai.operation.name"] == "chat"
    assert root["gen_ai.request.model"] == "fake-model"
    assert root["gen_ai.request.max_tokens"] == 9
    assert root["gen_ai.usage.input_tokens"] == 7
    assert root["gen_ai.usage.output_tokens"] == 5
    attempt = spans["chat upstream-model"]
    assert attempt["attributes"]["gen_ai.provider.name"] == "fake"
    assert attempt["parent_id"] == spans["keel.route"]["context"]["span_id"]
