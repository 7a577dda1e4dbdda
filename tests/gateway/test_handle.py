"""Gateway.handle called directly, as a batch or an evaluation calls it: no HTTP in between.

Whatever way a call ends, its trace is recorded once and its limits settle once (a key
allowed one call at a time gets the next one through).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keel.auth.keys import Principal
from keel.calls import Call
from keel.errors import NotFound
from keel.gateway.answer import Answer, EventStream
from keel.limits.spec import Limits
from keel.server.services import Services, stop_services
from keel.tracing.model import RequestTrace, http_status
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream

MESSAGES = [{"role": "user", "content": "hello"}]


@dataclasses.dataclass
class Batch:
    """A caller with a key allowed one call at a time, and every trace the gateway recorded."""

    services: Services
    principal: Principal
    recorded: list[RequestTrace]

    def call(self, **body: Any) -> Call:
        return Call("chat/completions", {"model": "fake-model", "messages": MESSAGES, **body},
                    self.principal)  # fmt: skip

    async def answer(self, **body: Any) -> Answer:
        answer = await self.services.gateway.handle(self.call(**body))
        assert isinstance(answer, Answer)
        return answer

    async def stream(self, **body: Any) -> EventStream:
        stream = await self.services.gateway.handle(self.call(stream=True, **body))
        assert isinstance(stream, EventStream)
        return stream


@pytest.fixture
async def batch(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Batch]:
    services, admin_key = build_services(tmp_path, upstream.base_url)
    admin = await services.keys.verify(admin_key)
    principal = dataclasses.replace(admin, key_id="batch", role="app",
                                    limits=Limits(concurrency=1))  # fmt: skip
    recorded: list[RequestTrace] = []
    services.tracing.recorder.submit = recorded.append  # type: ignore[method-assign,assignment]
    try:
        yield Batch(services, principal, recorded)
    finally:
        await stop_services(services)


async def test_a_whole_answer_comes_with_its_headers_and_one_trace(
    batch: Batch, upstream: FakeUpstream
) -> None:
    answer = await batch.answer()
    assert answer.body["choices"][0]["message"]["content"] == upstream.reply
    assert answer.body["model"] == "fake-model"
    assert answer.body["usage"]["completion_tokens"] > 0
    assert answer.headers["X-Keel-Route"] == "fake-model"
    assert answer.headers["X-Keel-Attempts"] == "1"
    [trace] = batch.recorded
    assert trace.error is None
    assert trace.usage is not None
    assert trace.usage.completion_tokens > 0
    assert trace.route == "fake-model"
    assert [step.name for step in trace.steps][:3] == ["prompt", "admit", "route"]
    await batch.answer()  # the one slot was given back
    assert len(batch.recorded) == 2


async def test_a_stream_read_to_its_end_is_recorded_once_when_it_ends(
    batch: Batch, upstream: FakeUpstream
) -> None:
    stream = await batch.stream()
    assert batch.recorded == []  # the call is not over until its events are
    events = b"".join([event async for event in stream.events])
    assert events.endswith(b"data: [DONE]\n\n")
    [trace] = batch.recorded
    assert trace.error is None
    assert trace.first_token_ns is not None
    assert "".join(trace.output) == upstream.reply


async def test_a_stream_closed_early_is_recorded_as_499_and_frees_the_slot(
    batch: Batch, upstream: FakeUpstream
) -> None:
    upstream.reply = " ".join(f"w{i}" for i in range(200))
    upstream.chunk_delay = 0.01
    stream = await batch.stream()
    first = await anext(aiter(stream.events))
    assert first.startswith(b"data: ")
    await stream.events.aclose()  # type: ignore[attr-defined]  # the caller stops reading
    [trace] = batch.recorded
    assert http_status(trace.error) == 499
    answer = await batch.answer()  # settled: the key's one slot is free again
    assert answer.body["choices"]
    assert len(batch.recorded) == 2


async def test_a_refused_call_raises_is_recorded_once_and_frees_the_slot(batch: Batch) -> None:
    with pytest.raises(NotFound, match="unknown model"):
        await batch.answer(model="no-such-model")
    [trace] = batch.recorded
    assert http_status(trace.error) == 404
    await batch.answer()
    assert len(batch.recorded) == 2
