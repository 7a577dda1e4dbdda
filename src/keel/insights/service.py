"""InsightsService: topics, anomalies, drift and similar requests over a project's sampled
traffic. Every method blocks (the store, numpy): call them from a worker thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel.errors import InvalidRequest, NotFound
from keel.insights import drift as drift_mod
from keel.insights.anomaly import THRESHOLD, Reference
from keel.insights.labels import top_terms
from keel.insights.store import InsightStore, ProjectSettings, Window
from keel.insights.topics import GRANULARITY, assign, cluster
from keel.insights.vectors import Vectors, nearest, unit

log = logging.getLogger("keel.insights")

EXAMPLES = 3
TREND_BUCKETS = 8
MAX_SEEN = 100_000  # flagged trace ids remembered, so a request is counted once
MIN_REQUESTS = 10  # fewer sampled requests than this make no topics worth the name
FEEDBACK_SOURCES = ("human", "api")  # people's scores (the console, /v1/feedback); not evaluators'
Feedback = Callable[[str, list[str]], dict[str, list[float]]]


def _iso_window(since_us: int, until_us: int) -> str:
    from datetime import UTC, datetime

    def iso(us: int) -> str:
        return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")

    return f"{iso(since_us)} .. {iso(until_us)}"


@dataclass
class InsightCounts:
    """For /metrics: requests flagged as anomalous (each once, however often it is listed)
    and drift alerts raised, per project."""

    flagged: dict[str, int] = field(default_factory=dict)
    drift_alerts: dict[str, int] = field(default_factory=dict)
    seen: dict[str, None] = field(default_factory=dict)  # flagged trace ids, oldest first

    def flag(self, project_id: str, trace_ids: list[str]) -> None:
        fresh = [t for t in trace_ids if t not in self.seen]
        for trace_id in fresh:
            self.seen[trace_id] = None
        while len(self.seen) > MAX_SEEN:
            del self.seen[next(iter(self.seen))]
        if fresh:
            self.flagged[project_id] = self.flagged.get(project_id, 0) + len(fresh)


class InsightsService:
    def __init__(
        self,
        store: InsightStore,
        embed_text: Callable[[list[str]], Vectors] | None = None,
        *,
        audit: Callable[[str, str, dict[str, Any]], None] | None = None,
        notify: Callable[[str, dict[str, Any]], None] | None = None,
        feedback: Feedback | None = None,
    ):
        """`embed_text` embeds a query text (similar requests); `audit(project, action,
        after)` records a drift alert; `notify(url, body)` posts it to a webhook;
        `feedback(project, trace_ids)` gives the feedback values of each trace that has any."""
        self.store = store
        self._embed_text = embed_text
        self._feedback = feedback
        self._audit = audit
        self._notify = notify
        self.counts = InsightCounts()

    # -- windows -------------------------------------------------------------------------

    def _window(self, project_id: str, since_us: int, until_us: int, route: str | None) -> Window:
        if until_us <= since_us:
            raise InvalidRequest(
                f"the window is empty: 'since' ({since_us}) is not before 'until' ({until_us}); "
                "give a start earlier than the end",
                param="since",
            )
        window = self.store.window(project_id, since_us, until_us, route=route)
        if len(window) == 0:
            if self.store.count(project_id) == 0:
                raise NotFound(
                    "this project has no embedded traffic yet; send requests through the "
                    "gateway (insights embed a sample of them in the background) and try again",
                    code="no_traffic",
                )
            raise NotFound(
                f"no embedded requests in {_iso_window(since_us, until_us)}"
                + (f" on route '{route}'" if route else "")
                + "; widen the window or drop the route filter",
                code="empty_window",
            )
        return window

    # -- topics --------------------------------------------------------------------------

    def topics(
        self,
        project_id: str,
        since_us: int,
        until_us: int,
        *,
        route: str | None = None,
        granularity: float | None = None,
    ) -> dict[str, Any]:
        """Topics of the window, computed now (the console; a job stores them: run_topics)."""
        return self._topics(project_id, since_us, until_us, route, granularity)[0]

    def run_topics(
        self,
        job_id: str,
        project_id: str,
        since_us: int,
        until_us: int,
        *,
        route: str | None = None,
        granularity: float | None = None,
    ) -> dict[str, Any]:
        """Topics of the window, stored under the job that asked for them."""
        result, centroids = self._topics(project_id, since_us, until_us, route, granularity)
        result = {**result, "job_id": job_id}
        self.store.save_topics(job_id, project_id, result, centroids)
        return result

    def stored_topics(
        self, project_id: str, *, job_id: str | None = None, route: str | None = None
    ) -> dict[str, Any] | None:
        """A stored topics result (a job's, or the project's newest), with the requests
        embedded since its window ended assigned to its topics (`new_requests`)."""
        run = self.store.topics(project_id, job_id=job_id, route=route)
        if run is None:
            return None
        result = dict(run.result)
        later = self.store.window(project_id, run.until_us, 2**62, route=route)
        counts = np.zeros(len(run.centroids), dtype=np.intp)
        if len(later) and len(run.centroids) and later.vectors.shape[1] == run.centroids.shape[1]:
            counts = np.bincount(assign(later.vectors, run.centroids)[0], minlength=len(counts))
        result["new_requests"] = len(later)
        result["topics"] = [
            {**topic, "new_requests": int(counts[topic["topic"]])
             if topic["topic"] < len(counts) else 0}
            for topic in result["topics"]
        ]  # fmt: skip
        return result

    def _topics(
        self,
        project_id: str,
        since_us: int,
        until_us: int,
        route: str | None,
        granularity: float | None,
    ) -> tuple[dict[str, Any], Vectors]:
        window = self._window(project_id, since_us, until_us, route)
        found = (
            cluster(window.vectors, granularity=granularity or GRANULARITY)
            if len(window) >= MIN_REQUESTS
            else None
        )
        labels = found.labels if found is not None else np.zeros(len(window), dtype=np.intp)
        count = found.count if found is not None else 1
        centroids = (
            found.centroids
            if found is not None
            else unit(window.vectors.mean(axis=0, keepdims=True))
        )
        terms = top_terms(window.texts, labels.tolist(), count)
        starts = np.asarray(window.start_us)
        edges = np.linspace(since_us, until_us, TREND_BUCKETS + 1)
        bucket = np.clip(np.searchsorted(edges, starts, side="right") - 1, 0, TREND_BUCKETS - 1)
        points = _map_2d(window.vectors)
        feedback = self._feedback(project_id, window.trace_ids) if self._feedback else {}
        topics = []
        for topic in range(count):
            members = np.flatnonzero(labels == topic)
            if len(members) == 0:
                continue
            costs = [c for c in (window.costs[i] for i in members) if c is not None]
            durations = sorted(window.durations_ms[i] for i in members)
            values = [v for i in members for v in feedback.get(window.trace_ids[i], ())]
            topics.append(
                {
                    "topic": topic,
                    "label": ", ".join(terms[topic][:3]) or f"topic {topic}",
                    "terms": terms[topic],
                    "requests": len(members),
                    "share": round(len(members) / len(window), 4),
                    "cost": round(float(sum(costs)), 6) if costs else None,
                    "latency_ms_p50": round(durations[len(durations) // 2], 1),
                    "error_rate": round(float(np.mean([window.errors[i] for i in members])), 4),
                    "feedback": {
                        "scores": len(values),
                        "mean": round(float(np.mean(values)), 4) if values else None,
                    },
                    "trend": np.bincount(bucket[members], minlength=TREND_BUCKETS).tolist(),
                    "examples": [
                        {"trace_id": window.trace_ids[i], "text": window.texts[i]}
                        for i in members[:EXAMPLES]
                    ],
                }
            )
        result = {
            "project_id": project_id,
            "since_us": since_us,
            "until_us": until_us,
            "route": route,
            "requests": len(window),
            "topics": topics,
            "points": [
                {
                    "trace_id": window.trace_ids[i],
                    "x": round(float(points[i, 0]), 4),
                    "y": round(float(points[i, 1]), 4),
                    "topic": int(labels[i]),
                    "text": window.texts[i][:200],
                }
                for i in range(len(window))
            ],
        }
        return result, np.asarray(centroids, dtype=np.float32).reshape(count, -1)

    # -- anomalies -----------------------------------------------------------------------

    def anomalies(
        self,
        project_id: str,
        reference: tuple[int, int],
        recent: tuple[int, int],
        *,
        route: str | None = None,
        threshold: float | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Score the recent window's requests against the reference window's; flag those
        over the project's threshold."""
        ref = self._window(project_id, *reference, route)
        new = self._window(project_id, *recent, route)
        if threshold is None:
            threshold = self.settings(project_id).anomaly_threshold
        overlap = set(ref.trace_ids)
        keep = [i for i, t in enumerate(new.trace_ids) if t not in overlap]
        if len(ref) < 2:
            raise InvalidRequest(
                "the reference window holds fewer than 2 requests; widen it", param="reference"
            )
        scores = Reference.build(ref.vectors).scores(new.vectors[keep]) if keep else np.zeros(0)
        order = np.argsort(-scores)
        flagged = [int(i) for i in order if scores[i] > threshold]
        self.counts.flag(project_id, [new.trace_ids[keep[i]] for i in flagged])
        return {
            "project_id": project_id,
            "threshold": threshold,
            "scored": len(keep),
            "flagged": len(flagged),
            "reference_requests": len(ref),
            "anomalies": [
                {
                    "trace_id": new.trace_ids[keep[i]],
                    "score": round(float(scores[i]), 4),
                    "text": new.texts[keep[i]],
                    "start_us": new.start_us[keep[i]],
                }
                for i in flagged[:limit]
            ],
        }

    # -- drift ---------------------------------------------------------------------------

    def drift(
        self,
        project_id: str,
        reference: tuple[int, int],
        recent: tuple[int, int],
        *,
        route: str | None = None,
        alpha: float = drift_mod.ALPHA,
    ) -> dict[str, Any]:
        ref = self._window(project_id, *reference, route)
        new = self._window(project_id, *recent, route)
        if len(ref) < MIN_REQUESTS or len(new) < MIN_REQUESTS:
            raise InvalidRequest(
                f"drift needs at least {MIN_REQUESTS} requests in each window (reference "
                f"{len(ref)}, recent {len(new)}); widen the windows",
                param="recent",
            )
        model = cluster(ref.vectors)
        groups = drift_mod.groups_of(model.centroids)
        new_labels = assign(new.vectors, model.centroids)[0]
        result = drift_mod.compare(model.labels, new_labels, model.count, groups, alpha=alpha)
        terms = top_terms(ref.texts, model.labels.tolist(), model.count)
        report: dict[str, Any] = {
            "project_id": project_id,
            "shifted": result.shifted,
            "alpha": alpha,
            "test": "chi-square test of homogeneity of the topic mix (topics and topic groups)",
            "p_value": result.p_value,
            "tests": [
                {
                    "grain": t.grain,
                    "statistic": round(t.statistic, 3),
                    "dof": t.dof,
                    "p_value": t.p_value,
                }
                for t in result.tests
            ],
            "reference_requests": len(ref),
            "recent_requests": len(new),
            "movers": [
                {
                    "topic": t,
                    "label": ", ".join(terms[t][:3]),
                    "reference_share": round(a, 4),
                    "recent_share": round(b, 4),
                }
                for t, a, b in result.movers
            ],
        }
        if result.shifted:
            self._alert(project_id, report)
        return report

    def _alert(self, project_id: str, report: dict[str, Any]) -> None:
        alerts = self.counts.drift_alerts
        alerts[project_id] = alerts.get(project_id, 0) + 1
        summary = {k: report[k] for k in ("p_value", "tests", "movers", "recent_requests")}
        if self._audit is not None:
            self._audit(project_id, "insights.drift", summary)
        webhook = self.settings(project_id).drift_webhook
        if webhook and self._notify is not None:
            try:
                self._notify(
                    webhook, {"event": "insights.drift", "project_id": project_id, **summary}
                )
            except Exception as error:  # the alert is in the audit log and the metric
                log.warning("insights: drift webhook %s failed: %s", webhook, error)
                report["webhook_error"] = str(error)

    # -- similar requests ----------------------------------------------------------------

    def similar(
        self,
        project_id: str,
        *,
        trace_id: str | None = None,
        text: str | None = None,
        since_us: int = 0,
        until_us: int | None = None,
        limit: int = 10,
    ) -> dict[str, Any]:
        if (trace_id is None) == (text is None or not text.strip()):
            raise InvalidRequest(
                "give exactly one of trace_id or a non-empty text", param="trace_id"
            )
        if trace_id is not None:
            found = self.store.get(project_id, trace_id)
            if len(found) == 0:
                raise NotFound(
                    f"no embedded request for trace '{trace_id}' in this project; it is unknown,"
                    " not sampled or not embedded yet (see GET /api/traces/{id})",
                    param="trace_id",
                )
            query = found.vectors
        else:
            if self._embed_text is None:
                raise InvalidRequest("no embedding model is served; search by trace_id instead")
            query = unit(self._embed_text([str(text)]))
        import time

        until = until_us if until_us is not None else time.time_ns() // 1000 + 1
        window = self._window(project_id, since_us, until, None)
        rows = [i for i, t in enumerate(window.trace_ids) if t != trace_id]
        if not rows:
            return {"project_id": project_id, "query": trace_id or text, "similar": []}
        indices, sims = nearest(query, window.vectors[rows], limit)
        return {
            "project_id": project_id,
            "query": trace_id or text,
            "similar": [
                {
                    "trace_id": window.trace_ids[rows[i]],
                    "similarity": round(float(s), 4),
                    "text": window.texts[rows[i]],
                    "answer": window.answers[rows[i]],
                    "start_us": window.start_us[rows[i]],
                }
                for i, s in zip(indices[0].tolist(), sims[0].tolist(), strict=True)
            ],
        }

    # -- settings ------------------------------------------------------------------------

    def settings(self, project_id: str) -> ProjectSettings:
        return self.store.settings(project_id, THRESHOLD)

    def save_settings(self, project_id: str, settings: ProjectSettings) -> None:
        self.store.save_settings(project_id, settings)


def _map_2d(vectors: Vectors) -> np.ndarray:
    """A 2-D map of the window for the console: its two principal components."""
    if len(vectors) < 3:
        return np.zeros((len(vectors), 2))
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return np.asarray(centred @ components[:2].T)
