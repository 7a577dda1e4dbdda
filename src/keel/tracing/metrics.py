"""Prometheus metrics of one gateway process, in a registry of its own (no globals).

Request metrics are fed from finished traces by the recorder, a slice of records at a
time; gauges (breakers, queue depth) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keel.tracing.convert import Converted

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class _Gauges(Collector):
    def __init__(
        self,
        breakers: Callable[[], dict[str, str]],
        queue_depth: Callable[[], int],
        spill_bytes: Callable[[], int],
    ):
        self._breakers = breakers
        self._queue_depth = queue_depth
        self._spill_bytes = spill_bytes

    def collect(self) -> Iterable[Metric]:
        breaker = GaugeMetricFamily(
            "keel_circuit_breaker_state",
            "Circuit breaker of each target: 0 closed, 1 half-open, 2 open.",
            labels=["target"],
        )
        for target, state in sorted(self._breakers().items()):
            breaker.add_metric([target], BREAKER_STATES.get(state, 2))
        yield breaker
        yield GaugeMetricFamily(
            "keel_trace_queue_depth",
            "Trace records waiting in memory for the batch writer.",
            value=self._queue_depth(),
        )
        yield GaugeMetricFamily(
            "keel_trace_spill_bytes",
            "Bytes of trace records waiting in spill files for the store.",
            value=self._spill_bytes(),
        )


class GatewayMetrics:
    def __init__(
        self,
        breakers: Callable[[], dict[str, str]],
        queue_depth: Callable[[], int],
        spill_bytes: Callable[[], int],
    ):
        self.registry = CollectorRegistry(auto_describe=False)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "keel_requests",
            "Gateway requests by route, operation and HTTP status.",
            ["route", "operation", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "keel_request_duration_seconds",
            "Gateway request duration (streams: to the last event).",
            ["route", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "keel_time_to_first_token_seconds",
            "Time from the request to the first streamed token.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "keel_tokens", "Tokens by route and direction.", ["route", "direction"], registry=r
        )
        self.cost = Counter("keel_cost", "Cost by route, in the prices' currency.", ["route"],
                            registry=r)  # fmt: skip
        self.upstream_errors = Counter(
            "keel_upstream_errors",
            "Failed upstream attempts by target and error type.",
            ["target", "type"],
            registry=r,
        )
        self.dropped = Counter(
            "keel_trace_records_dropped",
            "Trace records lost: the queue or the spill or quarantine files were full, a "
            "spill line was unreadable, or a spill file outlived the retention.",
            ["reason"],
            registry=r,
        )
        self.traces_written = Counter(
            "keel_trace_records_written", "Trace records written to the store.", registry=r
        )
        self.spilled = Counter(
            "keel_trace_records_spilled",
            "Trace records written to a spill file while the store was down or slow.",
            registry=r,
        )
        self.replayed = Counter(
            "keel_trace_records_replayed",
            "Trace records replayed from spill files into the store.",
            registry=r,
        )
        self.quarantined = Counter(
            "keel_trace_records_quarantined",
            "Trace records the store rejected for their data, kept in the quarantine file.",
            registry=r,
        )
        self.pruned = Counter(
            "keel_trace_records_pruned",
            "Trace records deleted by retention (reason: age, rows).",
            ["reason"],
            registry=r,
        )
        r.register(_Gauges(breakers, queue_depth, spill_bytes))

    def _child(self, metric: Any, *labels: str) -> Any:
        # labels() takes a lock and builds a key each time; remember the children instead.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, records: Iterable[Converted]) -> None:
        """Count finished requests (a slice of the recorder's batch, on the event loop).

        Counters move once per label set and call rather than once per request: each
        move takes a lock. Costs are floats, added one by one as they always were.
        """
        child = self._child
        requests: dict[tuple[str, ...], int] = {}
        tokens: dict[tuple[str, ...], int] = {}
        errors: dict[tuple[str, ...], int] = {}
        for record in records:
            row = record.trace
            route = row["route"] or row["model"] or "-"
            operation = row["operation"]
            key = (route, operation, str(row["http_status"]))
            requests[key] = requests.get(key, 0) + 1
            child(self.latency, route, operation).observe(row["duration_ms"] / 1000)
            if row["ttft_ms"] is not None:
                child(self.ttft, route).observe(row["ttft_ms"] / 1000)
            if row["input_tokens"]:
                direction = (route, "input")
                tokens[direction] = tokens.get(direction, 0) + row["input_tokens"]
            if row["output_tokens"]:
                direction = (route, "output")
                tokens[direction] = tokens.get(direction, 0) + row["output_tokens"]
            if row["cost"]:
                child(self.cost, route).inc(row["cost"])
            for failed in record.errors:
                errors[failed] = errors.get(failed, 0) + 1
        self._add(self.requests, requests)
        self._add(self.tokens, tokens)
        self._add(self.upstream_errors, errors)

    def _add(self, counter: Counter, counts: dict[tuple[str, ...], int]) -> None:
        for labels, count in counts.items():
            self._child(counter, *labels).inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
