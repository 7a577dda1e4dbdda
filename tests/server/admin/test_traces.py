"""/api/traces, /api/stats, scores and /v1/feedback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from keel.server.app import create_app
from keel.server.services import Services, stop_services
from keel.tracing.convert import Converted, span
from tests.support.app import build_services

NOW_US = time.time_ns() // 1000
Client = tuple[httpx.AsyncClient, Services, dict[str, str]]


def record(number: int, **columns: Any) -> Converted:
    trace_id = f"{number:032x}"
    start_us = columns.pop("start_us", NOW_US - 60_000_000 + number)
    row: dict[str, Any] = {
        "trace_id": trace_id, "project_id": "default", "key_id": "k1", "start_us": start_us,
        "duration_ms": 10.0, "ttft_ms": None, "operation": "chat", "model": "chat-default",
        "route": "chat-default", "target": "smollm2@1", "provider": "local", "user": None,
        "session_id": None, "prompt_name": None, "prompt_version": None, "status": "ok",
        "error_type": None, "http_status": 200, "attempts": 1, "input_tokens": 3,
        "output_tokens": 4, "cost": 0.5, "metadata": {}, "input": "question", "output": "answer",
        "input_sha256": None, "output_sha256": None, "input_bytes": 8, "output_bytes": 6,
    }  # fmt: skip
    row.update(columns)
    root = span(
        trace_id,
        "a" * 16,
        None,
        "chat chat-default",
        "server",
        start_us * 1000,
        start_us * 1000 + 10_000_000,
        row["status"],
        {"gen_ai.operation.name": "chat"},
    )
    child = span(trace_id, "b" * 16, "a" * 16, "keel.route", "internal", start_us * 1000,
                 start_us * 1000 + 1000, "ok", {"keel.route": row["route"]})  # fmt: skip
    return Converted(row, orjson.dumps([root, child]).decode())


@pytest.fixture
async def api(tmp_path: Path, database_url: str) -> AsyncIterator[Client]:
    services, key = build_services(tmp_path, "http://127.0.0.1:9/v1", database_url=database_url)
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        yield client, services, {"Authorization": f"Bearer {key}"}
    await stop_services(services)


async def test_stats_percentiles_tokens_and_cost_are_computed_by_the_store(api: Client) -> None:
    client, services, headers = api
    latencies = [10.0 * n for n in range(1, 11)]  # 10 … 100 ms on route a
    records = [record(n, duration_ms=ms, route="a", ttft_ms=ms / 2, status="error" if n < 3
                      else "ok") for n, ms in enumerate(latencies, 1)]  # fmt: skip
    records += [record(100 + n, duration_ms=5.0, route="b", cost=1.0) for n in range(4)]
    services.tracing.store.write(records)
    response = await client.get("/api/stats", params={"since": "1h", "bucket": 7200,
                                                      "by": "route"}, headers=headers)  # fmt: skip
    assert response.status_code == 200, response.text
    rows = {row["group"]: row for row in response.json()["data"]}
    a, b = rows["a"], rows["b"]
    assert (a["requests"], a["errors"], a["error_rate"]) == (10, 2, 0.2)
    # Interpolated percentiles (PostgreSQL's percentile_cont), the same on SQLite.
    assert a["latency_p50_ms"] == pytest.approx(55.0)
    assert a["latency_p95_ms"] == pytest.approx(95.5)
    assert a["latency_p99_ms"] == pytest.approx(99.1)
    assert a["ttft_p50_ms"] == pytest.approx(27.5)
    assert (a["input_tokens"], a["output_tokens"], a["cost"]) == (30, 40, 5.0)
    assert (b["requests"], b["latency_p99_ms"], b["ttft_p50_ms"], b["cost"]) == (4, 5.0, None, 4.0)

    whole = await client.get("/api/stats", params={"since": "1h", "bucket": 0, "by": "route"},
                             headers=headers)  # fmt: skip
    assert [(r["group"], r["requests"]) for r in whole.json()["data"]] == [("a", 10), ("b", 4)]


async def test_failed_attempts_count_against_the_target_that_failed_even_when_saved(
    api: Client,
) -> None:
    client, services, headers = api
    # chat@2 is dead: each request failed on it first, then chat@1 answered (attempts 2).
    saved = [record(200 + n, target="chat@1", attempts=2) for n in range(5)]
    for item in saved:
        item.errors = [("chat@2", "upstream_unavailable")]
    services.tracing.store.write([*saved, record(300, target="chat@1")])
    by_model = await client.get("/api/stats", params={"since": "1h", "bucket": 0,
                                                      "by": "model"}, headers=headers)  # fmt: skip
    assert by_model.status_code == 200, by_model.text
    rows = {row["group"]: row for row in by_model.json()["data"]}
    # The dead target answered nothing, yet it has a row with its 5 failures.
    assert (rows["chat@2"]["requests"], rows["chat@2"]["failed_attempts"]) == (0, 5)
    assert (rows["chat@1"]["requests"], rows["chat@1"]["failed_attempts"]) == (6, 0)
    by_route = await client.get("/api/stats", params={"since": "1h", "bucket": 0,
                                                      "by": "route"}, headers=headers)  # fmt: skip
    [route] = by_route.json()["data"]
    assert (route["requests"], route["errors"], route["failed_attempts"]) == (6, 0, 5)
    # Retention takes a trace's failed attempts with it.
    assert services.tracing.store.prune(NOW_US + 1) == 6
    after = await client.get("/api/stats", params={"since": "1h", "bucket": 0, "by": "model"},
                             headers=headers)  # fmt: skip
    assert after.json()["data"] == []


def online_score(name: str, number: float, passed: bool | None, **fields: Any) -> dict[str, Any]:
    score = {"name": name, "kind": "numeric", "number": number, "label": None, "flag": passed,
             "comment": None, "source": "evaluator", "author": "online:a"}  # fmt: skip
    return {**score, **fields}


async def test_stats_carry_the_online_scores_of_their_traces_per_scorer(api: Client) -> None:
    client, services, headers = api
    tracing = services.tracing
    tracing.store.write([record(400 + n, route="a") for n in range(3)] + [record(410, route="b")])
    a = [f"{400 + n:032x}" for n in range(3)]
    for trace_id, value in zip(a, (1.0, 0.0, 1.0), strict=True):
        tracing.add_score("default", trace_id, online_score("greets", value, value == 1.0))
    tracing.add_score("default", a[0], online_score("latency", 12.0, True))
    tracing.add_score("default", a[1], online_score("latency", 30.0, None))  # no verdict kept
    # Scores that are not online evaluation's: a person's, and groundedness from RAG.
    tracing.add_score("default", a[0], online_score("greets", 0.0, False, source="human"))
    tracing.add_score("default", a[1], online_score("greets", 0.0, False, author="keel:align"))
    response = await client.get("/api/stats", params={"since": "1h", "bucket": 0, "by": "route"},
                                headers=headers)  # fmt: skip
    assert response.status_code == 200, response.text
    rows = {row["group"]: row for row in response.json()["data"]}
    assert rows["b"]["online_scores"] == {}
    online = rows["a"]["online_scores"]
    assert online["greets"]["count"] == 3
    assert online["greets"]["mean"] == pytest.approx(2 / 3)
    assert (online["greets"]["passed"], online["greets"]["pass_rate"]) == (2, pytest.approx(2 / 3))
    assert online["latency"]["mean"] == pytest.approx(21.0)
    assert (online["latency"]["verdicts"], online["latency"]["pass_rate"]) == (1, 1.0)
    # Grouped by the version that answered, and outside the window: none.
    by_model = await client.get("/api/stats", params={"since": "1h", "bucket": 0, "by": "model"},
                                headers=headers)  # fmt: skip
    [row] = by_model.json()["data"]
    assert row["online_scores"]["greets"]["count"] == 3
    earlier = await client.get("/api/stats", params={"since": "3h", "until": "2h", "bucket": 0},
                               headers=headers)  # fmt: skip
    assert earlier.json()["data"] == []


async def test_traces_are_filtered_and_paged_newest_first(api: Client) -> None:
    client, services, headers = api
    records = [record(n) for n in range(7)]
    records.append(
        record(
            50,
            user="ada",
            session_id="s9",
            metadata={"feature": "faq"},
            duration_ms=900.0,
            output="the refund policy",
            status="error",
        )
    )
    records.append(record(51, project_id="other"))
    services.tracing.store.write(records)

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/traces", params=params, headers=headers)).json()
        seen += [t["trace_id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"{n:032x}" for n in (50, 6, 5, 4, 3, 2, 1, 0)]  # other projects: never

    for params in ({"user": "ada"}, {"session": "s9"}, {"metadata": "feature=faq"},
                   {"min_latency_ms": 500}, {"status": "error"}, {"q": "refund"}):  # fmt: skip
        found = (await client.get("/api/traces", params=params, headers=headers)).json()
        assert [t["trace_id"] for t in found["data"]] == [f"{50:032x}"], params

    detail = (await client.get(f"/api/traces/{50:032x}", headers=headers)).json()
    assert detail["spans"][0]["children"][0]["name"] == "keel.route"
    other = await client.get(f"/api/traces/{51:032x}", headers=headers)
    assert other.status_code == 404


@pytest.mark.parametrize(
    ("params", "param"),
    [({"since": "yesterday"}, "since"), ({"cursor": "bm9wZQ"}, "cursor"),
     ({"cursor": "%%%"}, "cursor"), ({"metadata": "novalue"}, "metadata"),
     ({"prompt": "p@x"}, "prompt"), ({"min_cost": -1}, "min_cost")],
)  # fmt: skip
async def test_garbage_in_a_query_is_a_400_naming_the_param(
    api: Client, params: dict[str, Any], param: str
) -> None:
    client, _, headers = api
    response = await client.get("/api/traces", params=params, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_scores_and_feedback_are_kept_on_the_trace(api: Client) -> None:
    client, services, headers = api
    services.tracing.store.write([record(1)])
    trace_id = f"{1:032x}"
    for value in (0.75, "helpful", True):
        response = await client.post(f"/api/traces/{trace_id}/scores", headers=headers,
                                     json={"name": "quality", "value": value,
                                           "source": "human"})  # fmt: skip
        assert response.status_code == 201, response.text
    project = services.keys.ensure_project()
    _, app_key = services.keys.create_key(project_id=project, role="app", name="app")
    feedback = await client.post("/v1/feedback", headers={"Authorization": f"Bearer {app_key}"},
                                 json={"trace_id": trace_id, "name": "thumbs", "value": False,
                                       "comment": "wrong answer"})  # fmt: skip
    assert feedback.status_code == 201, feedback.text
    scores = (await client.get(f"/api/traces/{trace_id}", headers=headers)).json()["scores"]
    assert [(s["name"], s["kind"], s["value"], s["source"]) for s in scores] == [
        ("quality", "numeric", 0.75, "human"),
        ("quality", "categorical", "helpful", "human"),
        ("quality", "boolean", True, "human"),
        ("thumbs", "boolean", False, "api"),
    ]
    missing = await client.post("/v1/feedback", headers=headers,
                                json={"trace_id": "f" * 32, "name": "x", "value": 1})  # fmt: skip
    assert missing.status_code == 404
