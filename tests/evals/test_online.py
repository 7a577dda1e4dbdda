"""Online evaluation: a rule scores a stable share of a route's live calls from their traces,
in the background; the scores attach to the traces and are summed up per route, in
/api/evals/online and in /api/stats."""

from __future__ import annotations

from keel.evals.online import sampled
from keel.server.admin.evals_online import online_evaluator
from tests.evals.conftest import Keel


def test_sampling_is_stable_and_near_its_share() -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    picked = [i for i in ids if sampled(i, 0.25)]
    assert picked == [i for i in ids if sampled(i, 0.25)]
    assert 900 < len(picked) < 1100
    assert all(sampled(i, 1.0) for i in ids)


async def test_live_calls_of_a_route_get_scores_in_the_background(keel: Keel) -> None:
    online = online_evaluator(keel.services)
    rule = {"sample": 1.0, "scorers": [{"type": "regex", "name": "greets",
                                        "pattern": "^Hello"}, {"type": "latency"}]}  # fmt: skip
    assert (await keel.ok("PUT", "/api/evals/online/fake-model", json=rule))["sample"] == 1.0
    for i in range(3):
        message = {"role": "user", "content": f"hi {i}"}
        body = {"model": "fake-model", "messages": [message]}
        await keel.ok("POST", "/v1/chat/completions", json=body)
    await keel.services.tracing.recorder.flush()
    assert await online.once() == 6  # two scores for each of the three calls
    assert await online.once() == 0  # each call is scored once
    page = await keel.ok("GET", "/api/traces", params={"model": "fake-model"})
    trace = await keel.ok("GET", f"/api/traces/{page['data'][0]['trace_id']}")
    scores = {s["name"]: s for s in trace["scores"]}
    assert scores["greets"]["value"] == 0.0  # the echo answers "hi …"
    assert scores["greets"]["source"] == "evaluator"
    # A score another evaluator posts (as the groundedness check does) is not an online score.
    other = {"name": "groundedness", "value": 0.4, "source": "evaluator"}
    await keel.ok("POST", f"/api/traces/{trace['trace_id']}/scores", json=other)
    summary = await keel.ok("GET", "/api/evals/online")
    assert summary["rules"][0]["route"] == "fake-model"
    counted = {(s["route"], s["name"]): s["count"] for s in summary["scores"]}
    assert counted == {("fake-model", "greets"): 3, ("fake-model", "latency"): 3}
    # The same scores in /api/stats, with the verdicts their thresholds gave.
    stats = await keel.ok("GET", "/api/stats", params={"since": "1h", "bucket": 0,
                                                       "by": "route"})  # fmt: skip
    [row] = [r for r in stats["data"] if r["group"] == "fake-model"]
    greets, latency = row["online_scores"]["greets"], row["online_scores"]["latency"]
    assert (greets["count"], greets["mean"], greets["pass_rate"]) == (3, 0.0, 0.0)
    assert (latency["count"], latency["verdicts"]) == (3, 3)
    assert latency["pass_rate"] is not None


async def test_online_rules_refuse_what_cannot_score_live_calls(keel: Keel) -> None:
    cases = [
        ("fake-model", {"sample": 0.5, "scorers": [{"type": "exact"}]}, "scorers[0].type"),
        ("nope", {"sample": 0.5, "scorers": [{"type": "json"}]}, "route"),
        ("fake-model", {"sample": 2, "scorers": [{"type": "json"}]}, "sample"),
    ]
    for route, body, param in cases:
        response = await keel.call("PUT", f"/api/evals/online/{route}", json=body)
        assert response.status_code in (400, 404), response.text
        assert response.json()["error"]["param"] == param
    assert (await keel.ok("GET", "/api/evals/online"))["rules"] == []
    gone = await keel.call("DELETE", "/api/evals/online/fake-model")
    assert gone.status_code == 404
