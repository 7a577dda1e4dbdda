"""Prometheus metrics of access control, read at scrape time from the running objects.

Nothing on the request path touches the registry: the counters are plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class AccessMetrics(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]):
        self._read = read

    def collect(self) -> Iterable[Metric]:
        values = self._read()
        yield CounterMetricFamily(
            "keel_limits_redis_failures",
            "Calls and idle pings to Redis for limits that failed; meanwhile requests were "
            "served with in-process limits.",
            value=values.get("redis_failures", 0),
        )
        yield CounterMetricFamily(
            "keel_limits_releases_expired",
            "Concurrency slots whose release Redis missed during an outage and that were "
            "left to expire (more than 10,000 waited).",
            value=values.get("releases_expired", 0),
        )
        yield GaugeMetricFamily(
            "keel_limits_degraded",
            "1 while limits are enforced per process because Redis is unreachable.",
            value=values.get("degraded", 0),
        )
        yield CounterMetricFamily(
            "keel_change_events_publish_failures",
            "Change events that could not be sent to the other replicas.",
            value=values.get("publish_failures", 0),
        )
        yield CounterMetricFamily(
            "keel_limits_settle_failures",
            "Requests whose tokens, spend or slot could not be settled.",
            value=values.get("settle_failures", 0),
        )
        yield CounterMetricFamily(
            "keel_usage_records_dropped",
            "Budget warnings lost because the background writer's queue was full.",
            value=values.get("dropped", 0),
        )
        yield CounterMetricFamily(
            "keel_usage_flush_failures",
            "Background writes of last-used times, spend or summaries that failed (kept).",
            value=values.get("flush_failures", 0),
        )
