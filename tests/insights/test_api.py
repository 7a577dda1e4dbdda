"""/api/insights over real traffic: requests through the gateway are embedded in the
background by the bundled MiniLM into the SQLite store, then grouped into topics, scored
for anomalies, compared for drift and searched for similar requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder
from keel.server.admin.insights import insights_of
from keel.server.app import create_app
from keel.server.openai.files import job_system
from tests.support.app import build_services
from tests.support.http import served_in_thread
from tests.support.upstream import FakeUpstream

WEATHER = [
    "what is the weather like in {} today",
    "will it rain in {} tomorrow",
    "weather forecast for {} this weekend",
    "how hot will it be in {} this afternoon",
]
PASSWORD = [
    "i forgot the password of my {} account",
    "how do i reset my {} password",
    "my {} login password stopped working",
    "change the password on my {} account",
]
CITIES = ["paris", "berlin", "tokyo", "lima", "oslo"]
SERVICES = ["email", "bank", "work", "game", "cloud"]
STRANGE = "explain the borrow checker error E0502 in my rust program"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    data = tmp_path_factory.mktemp("insights") / "data"

    async def make_app() -> ASGIApp:
        upstream = FakeUpstream()
        await upstream.start()
        services, key = build_services(data, upstream.base_url)
        embedder = LocalEmbedder(services.settings.embedding_model_name, minilm_dir())
        services.catalog.add_embedder(embedder)
        embedder.start_loading()
        found.update(key=key, services=services)
        app = create_app(services.settings, services=services)
        insights_of(services)  # what the app's lifespan does: the topics kind joins the jobs
        await job_system(services).start()
        return app

    with served_in_thread(make_app) as base:
        found["base"] = base
        found["headers"] = {"Authorization": f"Bearer {found['key']}"}
        yield found


def chat(api: dict[str, Any], text: str) -> str:
    response = httpx.post(
        f"{api['base']}/v1/chat/completions",
        headers=api["headers"],
        json={"model": "fake-model", "messages": [{"role": "user", "content": text}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.headers["x-keel-trace-id"])


def get(api: dict[str, Any], path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{api['base']}/api/insights/{path}", headers=api["headers"], params=params, timeout=120
    )


def embedded(api: dict[str, Any], count: int) -> None:
    """Wait until the background embedder has stored `count` requests (its /metrics count)."""
    for _ in range(600):
        metrics = httpx.get(f"{api['base']}/metrics", headers=api["headers"]).text
        line = next(x for x in metrics.splitlines() if x.startswith("keel_insights_embedded_total"))
        if float(line.split()[-1]) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"traffic never embedded: {line}")


def topics_job(api: dict[str, Any], **body: Any) -> dict[str, Any]:
    """Start an insights.topics job and wait for it; returns GET /api/insights/topics."""
    started = httpx.post(
        f"{api['base']}/api/insights/topics", headers=api["headers"], json=body, timeout=30
    )
    assert started.status_code == 201, started.text
    assert started.json()["kind"] == "insights.topics"
    job_id = started.json()["id"]
    for _ in range(600):
        found = get(api, "topics", job_id=job_id)
        assert found.status_code == 200, found.text
        if found.json()["job"]["state"] in ("succeeded", "failed"):
            return dict(found.json())
        time.sleep(0.1)
    raise AssertionError(f"topics job {job_id} never ended: {found.text}")


def feedback(api: dict[str, Any], trace_id: str, value: bool) -> None:
    response = httpx.post(
        f"{api['base']}/v1/feedback",
        headers=api["headers"],
        json={"trace_id": trace_id, "name": "thumbs_up", "value": value},
    )
    assert response.status_code == 201, response.text


def test_insights_of_real_traffic(api: dict[str, Any]) -> None:
    # A project with no traffic yet: a message saying what to do, not a 500.
    nothing = get(api, "topics")
    assert nothing.status_code == 404
    assert "no topics computed yet" in nothing.json()["error"]["message"]
    empty = topics_job(api, hours=1)
    assert empty["job"]["state"] == "failed"
    assert empty["result"] is None
    assert "no embedded traffic" in empty["job"]["error"]

    ids = {}
    for template in WEATHER:
        for city in CITIES:
            ids[template.format(city)] = chat(api, template.format(city))
    for template in PASSWORD:
        for service in SERVICES:
            ids[template.format(service)] = chat(api, template.format(service))
    embedded(api, len(ids))
    # People liked the weather answers and disliked the password ones.
    feedback(api, ids["will it rain in paris tomorrow"], True)
    feedback(api, ids["weather forecast for oslo this weekend"], True)
    feedback(api, ids["how do i reset my bank password"], False)
    split = time.time()
    time.sleep(0.05)
    strange = chat(api, STRANGE)
    usual = chat(api, "weather forecast for madrid this weekend")
    embedded(api, len(ids) + 2)

    found = topics_job(api, hours=1)
    assert found["job"]["state"] == "succeeded"
    assert found["job"]["progress"]["done"] == found["job"]["progress"]["total"] == 1
    topics = found["result"]
    labels = " ".join(" ".join(t["terms"]) for t in topics["topics"])
    assert "weather" in labels or "rain" in labels
    assert "password" in labels
    assert len(topics["points"]) == topics["requests"] == len(ids) + 2
    weather_topics = {p["topic"] for p in topics["points"] if "weather" in p["text"]}
    password_topics = {p["topic"] for p in topics["points"] if "password" in p["text"]}
    assert not weather_topics & password_topics
    by_id = {t["topic"]: t for t in topics["topics"]}
    rain = next(
        p["topic"] for p in topics["points"] if p["text"] == "will it rain in paris tomorrow"
    )
    reset = next(
        p["topic"] for p in topics["points"] if p["text"] == "how do i reset my bank password"
    )
    assert by_id[rain]["feedback"]["mean"] == 1.0
    assert by_id[reset]["feedback"] == {"scores": 1, "mean": 0.0}
    assert sum(t["feedback"]["scores"] for t in topics["topics"]) == 3

    # Stored: the newest run is served without clustering again, and newer traffic is
    # assigned to its topics.
    now = time.time()  # the anomaly checks below leave this later request out
    time.sleep(0.05)
    chat(api, "will it snow in berlin tomorrow")
    embedded(api, len(ids) + 3)
    newest = get(api, "topics").json()
    assert newest["job"]["id"] == found["job"]["id"]
    assert newest["result"]["requests"] == topics["requests"]
    assert newest["result"]["new_requests"] == 1
    assert sum(t["new_requests"] for t in newest["result"]["topics"]) == 1
    assigned = [t["topic"] for t in newest["result"]["topics"] if t["new_requests"]]
    assert len(assigned) == 1
    assert assigned[0] in weather_topics

    recent_hours = (now - split) / 3600
    anomalies = get(api, "anomalies", hours=recent_hours, reference_hours=1, until=now).json()
    assert anomalies["scored"] == 2
    flagged = [a["trace_id"] for a in anomalies["anomalies"]]
    assert flagged == [strange]
    assert usual not in flagged

    similar = get(api, "similar", trace_id=ids["how do i reset my bank password"]).json()
    assert all("password" in s["text"] for s in similar["similar"][:5])
    assert similar["similar"][0]["answer"] == "Hello from the fake upstream."
    by_text = get(api, "similar", text="is it going to snow in oslo", limit=3).json()
    assert all(
        "oslo" in s["text"] or "weather" in s["text"] or "rain" in s["text"] or "hot" in s["text"]
        for s in by_text["similar"]
    )

    again = get(api, "anomalies", hours=recent_hours, reference_hours=1, until=now).json()
    assert [a["trace_id"] for a in again["anomalies"]] == [strange]
    # Listed twice, counted once.
    metrics = httpx.get(f"{api['base']}/metrics", headers=api["headers"]).text
    assert 'keel_insights_anomalies_total{project="default"} 1.0' in metrics


def test_bad_input_is_a_clear_4xx(api: dict[str, Any]) -> None:
    unknown = get(api, "similar", trace_id="0" * 32)
    assert unknown.status_code == 404
    assert "no embedded request for trace" in unknown.json()["error"]["message"]
    neither = get(api, "similar")
    assert neither.status_code == 400
    assert "exactly one of trace_id or a non-empty text" in neither.json()["error"]["message"]
    long_ago = topics_job(api, hours=1, until=1_000_000)
    assert long_ago["job"]["state"] == "failed"
    assert "widen the window" in long_ago["job"]["error"]
    negative = httpx.post(
        f"{api['base']}/api/insights/topics", headers=api["headers"], json={"hours": -1}
    )
    assert negative.status_code in (400, 422)
    unknown_job = get(api, "topics", job_id="insights.topics_000")
    assert unknown_job.status_code == 404
    assert "no topics job" in unknown_job.json()["error"]["message"]
    drift = httpx.post(
        f"{api['base']}/api/insights/drift",
        headers=api["headers"],
        json={"recent_hours": 1, "until": 1_000_000},
    )
    assert drift.status_code == 404
