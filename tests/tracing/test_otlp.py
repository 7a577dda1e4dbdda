"""OTLP/HTTP export: the same spans, with the same attributes, reach a collector."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from keel.deploy.llamacpp import free_port
from keel.server.app import create_app
from keel.server.services import stop_services
from keel.tracing.otlp import traces_url
from tests.support.app import build_services
from tests.support.upstream import FakeUpstream
from tests.tracing.conftest import recorded


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class Collector:
    """An OTLP/HTTP receiver that decodes the protobuf export requests it gets."""

    def __init__(self) -> None:
        self.spans: dict[str, dict[str, Any]] = {}
        self.port = free_port()
        self.content_types: set[str] = set()

    async def receive(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource in message.resource_spans:
            service = {a.key: plain(a.value) for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans[span.name] = {
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "service": service,
                        "attributes": {a.key: plain(a.value) for a in span.attributes},
                    }  # fmt: skip
        return web.Response(content_type="application/x-protobuf", body=b"")


def test_base_endpoints_get_the_traces_path() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"


async def test_spans_are_exported_with_their_gen_ai_attributes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", collector.port).start()
    services, key = build_services(tmp_path, upstream.base_url,
                                   otlp_endpoint=f"http://127.0.0.1:{collector.port}")  # fmt: skip
    try:
        keel = create_app(services.settings, services=services)
        transport = httpx.ASGITransport(app=keel)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
            response = await client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "fake-model", "stream": True, "temperature": 0.5,
                      "messages": [{"role": "user", "content": "Say hi"}]},
            )  # fmt: skip
            trace_id = response.headers["x-keel-trace-id"]
            stored = await recorded(client, key, trace_id)
        exporter = services.tracing.exporter
        assert exporter is not None
        assert await asyncio.to_thread(exporter.flush)
    finally:
        await stop_services(services)
        await runner.cleanup()

    assert collector.content_types == {"application/x-protobuf"}
    root = collector.spans["chat fake-model"]
    assert root["trace_id"] == trace_id
    assert root["service"]["service.name"] == "keel"
    stored_root = stored["spans"][0]  # type: ignore[index]
    assert root["attributes"] == stored_root["attributes"]  # the same attributes as stored
    assert root["attributes"]["gen_ai.usage.output_tokens"] == 5
    assert root["attributes"]["gen_ai.request.temperature"] == 0.5
    attempt = collector.spans["chat upstream-model"]
    assert attempt["attributes"]["gen_ai.provider.name"] == "fake"
    assert attempt["parent"] == collector.spans["keel.route"]["span_id"]
