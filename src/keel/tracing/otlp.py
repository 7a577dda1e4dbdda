"""Export Keel's spans over OTLP/HTTP (protobuf), with the same names and attributes.

OpenTelemetry's SDK is imported only when `otlp_endpoint` is set; its batch processor
queues, batches and sends spans in a thread of its own, off Keel's writer.
"""

from __future__ import annotations

from typing import Any

import orjson

import keel
from keel.tracing.convert import Converted

INSTALL_HINT = (
    "pip install 'keel[otlp]' (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http)"
)


def traces_url(endpoint: str) -> str:
    """A base endpoint (http://host:4318) gets OTLP's /v1/traces path; a full one is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class OtlpExporter:
    """Callable the recorder hands converted traces to (from its worker thread)."""

    def __init__(self, endpoint: str, *, service_name: str = "keel", timeout: float = 10.0):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError as exc:
            raise RuntimeError(
                f"otlp_endpoint is set but OpenTelemetry's SDK is missing; {INSTALL_HINT}"
            ) from exc
        self.url = traces_url(endpoint)
        self._resource = Resource.create(
            {"service.name": service_name, "service.version": keel.__version__}
        )
        self._scope = InstrumentationScope("keel", keel.__version__)
        self._processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=self.url, timeout=timeout),
            max_queue_size=20_000,
            schedule_delay_millis=1000,
        )

    def __call__(self, records: list[Converted]) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        kinds = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT}
        for record in records:
            for span in orjson.loads(record.spans):
                trace_id = int(span["trace_id"], 16)
                context = SpanContext(
                    trace_id, int(span["span_id"], 16), False, TraceFlags(TraceFlags.SAMPLED)
                )
                parent = None
                if span["parent_id"]:
                    parent = SpanContext(
                        trace_id, int(span["parent_id"], 16), False, TraceFlags(TraceFlags.SAMPLED)
                    )
                attributes: dict[str, Any] = {
                    k: v for k, v in span["attributes"].items() if v is not None
                }
                status = (
                    Status(StatusCode.ERROR, attributes.get("error.type"))
                    if span["status"] == "error"
                    else Status(StatusCode.OK)
                )
                self._processor.on_end(
                    ReadableSpan(
                        name=span["name"],
                        context=context,
                        parent=parent,
                        resource=self._resource,
                        attributes=attributes,
                        kind=kinds.get(span["kind"], SpanKind.INTERNAL),
                        status=status,
                        start_time=span["start_ns"],
                        end_time=span["end_ns"],
                        instrumentation_scope=self._scope,
                    )
                )

    def flush(self, timeout_millis: int = 10_000) -> bool:
        return bool(self._processor.force_flush(timeout_millis))

    def close(self) -> None:
        self._processor.shutdown()  # type: ignore[no-untyped-call]
