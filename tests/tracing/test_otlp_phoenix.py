"""OTLP export into an independent receiver: Arize Phoenix, run as its own process.

`./run test` installs Phoenix into a venv of its own and sets KEEL_TEST_PHOENIX to its
`phoenix` executable. Without it the test skips and says why; with CI=true it fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.deploy.llamacpp import free_port
from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.services import on_ci
from tests.support.upstream import FakeUpstream
from tests.tracing.conftest import recorded

PHOENIX = os.environ.get("KEEL_TEST_PHOENIX", "")
# Phoenix fetches a WASM sandbox and sends telemetry when it starts unless told not to;
# the test must not depend on the network.
OFFLINE = {"PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false", "PHOENIX_TELEMETRY_ENABLED": "false"}
START_TIMEOUT = 120.0  # Phoenix starts (imports, SQLite migrations) in 12 s idle, 45 s loaded
INGEST_TIMEOUT = 30.0


def phoenix_executable() -> str:
    """KEEL_TEST_PHOENIX, or a skip that says why (a failure with CI=true)."""
    if PHOENIX and os.access(PHOENIX, os.X_OK):
        return PHOENIX
    why = "KEEL_TEST_PHOENIX is unset"
    if PHOENIX:
        why = f"KEEL_TEST_PHOENIX={PHOENIX!r} is not an executable"
    if on_ci():
        pytest.fail(f"{why} and CI=true; ./run test installs Phoenix and sets it")
    pytest.skip(f"{why}; ./run test installs Phoenix, or point it at a `phoenix` executable")


@pytest.fixture
def phoenix(tmp_path: Path) -> Iterator[str]:
    """A Phoenix server on free ports with its data in tmp_path; yields its base URL."""
    executable = phoenix_executable()
    work_dir = tmp_path / "phoenix"
    work_dir.mkdir()
    port = free_port()
    env = {**os.environ, **OFFLINE, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(free_port()), "PHOENIX_WORKING_DIR": str(work_dir)}  # fmt: skip
    log_path = tmp_path / "phoenix.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([executable, "serve"], env=env, stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base, log_path)
        yield base
    finally:
        stop(process)


def wait_ready(process: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Phoenix exited with {process.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Phoenix did not answer /healthz within {START_TIMEOUT:.0f} s:\n{tail(log_path)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to Phoenix's process group, SIGKILL if it lingers: no server outlives the test."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def phoenix_spans(base: str, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    """Spans of one trace as Phoenix stored them, by name, once all `names` are in."""
    deadline = time.monotonic() + INGEST_TIMEOUT
    while True:
        response = httpx.get(f"{base}/v1/projects/default/spans",
                             params={"trace_id": trace_id, "limit": 100}, timeout=10)  # fmt: skip
        assert response.status_code == 200, response.text
        found = {
            s["name"]: s for s in response.json()["data"] if s["context"]["trace_id"] == trace_id
        }
        if names <= found.keys() or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def flatten(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Keel's stored span tree, by name."""
    out: dict[str, dict[str, Any]] = {}
    for span in spans:
        out[span["name"]] = span
        out.update(flatten(span.get("children", [])))
    return out


async def test_phoenix_receives_the_spans_with_gen_ai_attributes(
    tmp_path: Path, upstream: FakeUpstream, phoenix: str
) -> None:
    services, key = build_services(tmp_path / "keel", upstream.base_url, otlp_endpoint=phoenix)
    try:
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
            assert response.status_code == 200, response.text
            trace_id = response.headers["x-keel-trace-id"]
            stored = flatten((await recorded(client, key, trace_id))["spans"])  # type: ignore[arg-type]
        assert services.tracing.exporter is not None
        assert await asyncio.to_thread(services.tracing.exporter.flush)
    finally:
        await stop_services(services)

    names = {"chat fake-model", "keel.auth", "keel.route", "chat upstream-model"}
    spans = await asyncio.to_thread(phoenix_spans, phoenix, trace_id, names)
    assert names <= stored.keys()
    assert names <= spans.keys(), f"Phoenix has {sorted(spans)} of trace {trace_id}"

    root = spans["chat fake-model"]
    assert root["parent_id"] is None
    attributes = root["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "fake"
    assert attributes["gen_ai.request.model"] == "fake-model"
    assert attributes["gen_ai.request.max_tokens"] == 9
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["keel.stream"] is True
    assert attributes["keel.status"] == "ok"
    assert attributes["keel.route"] == "fake-model"
    assert attributes["keel.attempts"] == 1
    assert attributes["keel.project"] == stored["chat fake-model"]["attributes"]["keel.project"]
    # Every attribute Keel stored reached Phoenix unchanged (Phoenix adds llm.* of its own).
    for name, span in stored.items():
        received = spans[name]["attributes"]
        sent = {k: v for k, v in span["attributes"].items() if v is not None}
        assert {k: received.get(k) for k in sent} == sent, name

    attempt = spans["chat upstream-model"]
    assert attempt["attributes"]["gen_ai.provider.name"] == "fake"
    assert attempt["attributes"]["gen_ai.request.model"] == "upstream-model"
    assert attempt["parent_id"] == spans["keel.route"]["context"]["span_id"]
    assert spans["keel.route"]["parent_id"] == root["context"]["span_id"]
