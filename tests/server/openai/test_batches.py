"""The Batch API through the official openai SDK: a batch of N lines answered once each,
matched by custom_id, counted once at the upstream; cancelling; listing; a key's project."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.calls import Call
from keel.jobs.executor import ExecutorOptions
from keel.server.app import create_app
from keel.server.openai.files import job_system
from keel.server.services import Services, stop_services
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

N = 200


@dataclass
class Keel:
    client: openai.AsyncOpenAI
    services: Services
    upstream: FakeUpstream


@pytest.fixture
async def keel(tmp_path: Path, upstream: FakeUpstream, database_url: str) -> AsyncIterator[Keel]:
    """Keel over SQLite, then over PostgreSQL, with the SDK as its client."""
    upstream.echo = True  # each answer repeats its line's message: results can be matched
    services, key = build_services(tmp_path, upstream.base_url, database_url=database_url)
    app = create_app(services.settings, services=services)
    system = job_system(services)
    system.executor.options = ExecutorOptions(
        concurrency=8, heartbeat_seconds=0.05, poll_seconds=0.05
    )
    await system.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel/v1") as http:
        client = openai.AsyncOpenAI(api_key=key, base_url="http://keel/v1", http_client=http)
        yield Keel(client, services, upstream)
    await system.stop()
    await stop_services(services)


def batch_file(n: int, model: str = "fake-model") -> bytes:
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"line {i}"}]},
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


async def wait_final(client: openai.AsyncOpenAI, batch_id: str) -> Any:
    for _ in range(3000):
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled"):
            return batch
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not finish")


async def test_a_batch_through_the_sdk_answers_every_line_once_by_custom_id(keel: Keel) -> None:
    uploaded = await keel.client.files.create(file=("in.jsonl", batch_file(N)), purpose="batch")
    assert uploaded.purpose == "batch"
    created = await keel.client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "search"},
    )
    assert created.status == "in_progress"
    assert created.request_counts is not None
    assert created.request_counts.total == N
    done = await wait_final(keel.client, created.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (N, 0)
    assert done.error_file_id is None
    assert done.metadata == {"team": "search"}
    assert done.output_file_id is not None
    content = await keel.client.files.content(done.output_file_id)
    results = [json.loads(line) for line in content.text.splitlines()]
    by_id = {result["custom_id"]: result for result in results}
    assert len(results) == len(by_id) == N
    for i in range(N):
        response = by_id[f"req-{i}"]["response"]
        assert response["status_code"] == 200
        assert response["body"]["choices"][0]["message"]["content"] == f"line {i}"
    sent = Counter(r["messages"][-1]["content"] for r in keel.upstream.requests)
    assert len(keel.upstream.requests) == N  # the stub counted exactly N calls
    assert set(sent.values()) == {1}


async def test_every_line_is_traced_as_a_call_of_the_batchs_key(keel: Keel) -> None:
    recorded: list[Any] = []
    keel.services.tracing.recorder.submit = recorded.append  # type: ignore[method-assign,assignment]
    uploaded = await keel.client.files.create(file=("in.jsonl", batch_file(3)), purpose="batch")
    created = await keel.client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await wait_final(keel.client, created.id)
    assert len(recorded) == 3
    assert {trace.route for trace in recorded} == {"fake-model"}
    assert {dict(trace.metadata)["batch_id"] for trace in recorded} == {created.id}


async def test_lines_that_fail_upstream_go_to_the_error_file_with_their_status(
    keel: Keel,
) -> None:
    keel.upstream.behaviour = "status:400"  # an upstream refusal is not retried
    uploaded = await keel.client.files.create(file=("in.jsonl", batch_file(3)), purpose="batch")
    created = await keel.client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await wait_final(keel.client, created.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 3)
    assert done.output_file_id is None
    assert done.error_file_id is not None
    errors = (await keel.client.files.content(done.error_file_id)).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in errors) == ["req-0", "req-1", "req-2"]
    assert {json.loads(line)["response"]["status_code"] for line in errors} == {
        400
    }  # as the upstream said
    assert len(keel.upstream.requests) == 3


async def test_cancel_stops_the_batch_and_keeps_what_was_answered(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    services, key = build_services(tmp_path, upstream.base_url)
    release = asyncio.Event()
    started = asyncio.Event()
    handle = services.gateway.handle
    calls = 0

    async def held(call: Call) -> Any:  # the first lines wait until the test cancels
        nonlocal calls
        calls += 1
        if calls >= 2:
            started.set()
        await release.wait()
        return await handle(call)

    services.gateway.handle = held  # type: ignore[method-assign]
    app = create_app(services.settings, services=services)
    system = job_system(services)
    system.executor.options = ExecutorOptions(concurrency=2, heartbeat_seconds=0.05)
    await system.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://keel/v1"
        ) as http:
            client = openai.AsyncOpenAI(api_key=key, base_url="http://keel/v1", http_client=http)
            uploaded = await client.files.create(file=("in.jsonl", batch_file(50)), purpose="batch")
            created = await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            await started.wait()
            cancelling = await client.batches.cancel(created.id)
            assert cancelling.status == "cancelling"
            release.set()
            done = await wait_final(client, created.id)
    finally:
        await system.stop()
        await stop_services(services)
    assert done.status == "cancelled"
    assert done.request_counts is not None
    assert done.request_counts.completed == 2  # the two in flight; nothing started after
    assert calls == 2
    assert len(upstream.requests) == 2


async def test_batches_list_newest_first_and_stay_in_their_project(keel: Keel) -> None:
    uploaded = await keel.client.files.create(file=("in.jsonl", batch_file(1)), purpose="batch")
    ids = []
    for _ in range(3):
        batch = await keel.client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ids.append(batch.id)
    page = await keel.client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more is True
    every = [b.id async for b in keel.client.batches.list(limit=2)]
    assert every == ids[::-1]
    keel.services.keys.ensure_project("elsewhere")
    _, other = keel.services.keys.create_key(project_id="elsewhere", role="admin", name="other")
    stranger = openai.AsyncOpenAI(
        api_key=other, base_url="http://keel/v1", http_client=keel.client._client
    )
    with pytest.raises(openai.NotFoundError):
        await stranger.batches.retrieve(ids[0])
    assert (await stranger.batches.list()).data == []


async def test_a_batch_is_paced_by_its_keys_limits_and_loses_no_line(keel: Keel) -> None:
    _, limited = keel.services.keys.create_key(
        project_id="default", role="app", name="two-at-a-time", limits={"concurrency": 2}
    )
    client = openai.AsyncOpenAI(
        api_key=limited, base_url="http://keel/v1", http_client=keel.client._client
    )
    uploaded = await client.files.create(file=("in.jsonl", batch_file(20)), purpose="batch")
    created = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await wait_final(client, created.id)  # 8 slots, but the key allows 2 at a time
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (20, 0)
    assert len(keel.upstream.requests) == 20
