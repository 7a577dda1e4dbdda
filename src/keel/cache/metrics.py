"""Prometheus metrics of this process's response cache, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from keel.cache.service import ResponseCache


class CacheMetrics(Collector):
    def __init__(self, cache: ResponseCache):
        self._cache = cache

    def collect(self) -> Iterable[Metric]:
        lookups = CounterMetricFamily(
            "keel_cache_lookups", "Cache lookups by result (this process).", labels=["result"]
        )
        counts = self._cache.counts
        for result, name in (("hit-exact", "hits_exact"), ("hit-semantic", "hits_semantic"),
                             ("miss", "misses")):  # fmt: skip
            lookups.add_metric([result], counts[name])
        yield lookups
        yield CounterMetricFamily(
            "keel_cache_stores", "Answers stored in the cache.", value=counts["stores"]
        )
        yield CounterMetricFamily(
            "keel_cache_failures",
            "Cache calls that failed (backend or embedder); each was served as a miss.",
            value=counts["failures"],
        )
        late = CounterMetricFamily(
            "keel_cache_late_embeddings",
            "Answers stored before the embedder was ready, by outcome: embedded later, or "
            "dropped (kept for exact hits only).",
            labels=["result"],
        )
        late.add_metric(["embedded"], counts["late_embedded"])
        late.add_metric(["dropped"], counts["late_dropped"])
        yield late
        yield CounterMetricFamily(
            "keel_cache_skipped",
            "Lookups and stores skipped for a few seconds after a failure (served as misses).",
            value=counts["skipped"],
        )
