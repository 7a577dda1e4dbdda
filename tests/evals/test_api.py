"""The evaluation API over the scriptable upstream: versioned datasets from files and
traces, experiments as jobs with traced calls, comparisons, gates, and bad input refused
whole with the field or line named."""

from __future__ import annotations

import json
from typing import Any

from keel.tracing.store import TraceFilter
from tests.evals.conftest import Keel
from tests.server.admin.test_traces import record

QUIZ = [("Paris", "Paris"), ("Rome", "Rome"), ("Berlin", "Bonn"), ("Madrid", "Madrid")]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


async def quiz(keel: Keel, name: str = "quiz") -> None:
    items = [{"input": question, "expected": answer} for question, answer in QUIZ]
    await keel.ok("POST", "/api/datasets", json={"name": name, "items": items})


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "capitals",
        "dataset": "quiz",
        "subjects": [{"model": "fake-model", "params": {"temperature": 0}}],
        "scorers": [{"type": "exact", "name": "accuracy"}, {"type": "latency"}],
    }
    body.update(overrides)
    return body


async def test_versions_are_immutable_and_items_keep_their_version(keel: Keel) -> None:
    await quiz(keel)
    added = await keel.ok("POST", "/api/datasets/quiz/items",
                          json={"items": [{"input": "Lisbon", "expected": "Lisbon"}],
                                "note": "one more"})  # fmt: skip
    assert (added["version"], added["items"]) == (2, 5)
    first = (await keel.ok("GET", "/api/datasets/quiz/items?version=1"))["data"]
    remove = first[0]["id"]
    third = await keel.ok("POST", "/api/datasets/quiz/items", json={"remove": [remove]})
    assert (third["version"], third["items"]) == (3, 4)
    again = await keel.ok("GET", "/api/datasets/quiz/items?version=1")
    assert [i["id"] for i in again["data"]] == [i["id"] for i in first]  # v1 unchanged
    latest = await keel.ok("GET", "/api/datasets/quiz/items")
    assert latest["version"] == 3
    assert remove not in [i["id"] for i in latest["data"]]
    info = await keel.ok("GET", "/api/datasets/quiz")
    assert [v["version"] for v in info["versions"]] == [3, 2, 1]
    assert info["versions"][1]["note"] == "one more"


async def test_removing_an_id_no_row_can_have_is_a_400_and_makes_no_version(keel: Keel) -> None:
    await quiz(keel)
    refused = await keel.call("POST", "/api/datasets/quiz/items", json={"remove": [2**64]})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"].startswith("remove")
    assert (await keel.ok("GET", "/api/datasets/quiz"))["versions"][0]["version"] == 1


async def test_a_file_with_a_broken_line_is_refused_whole(keel: Keel) -> None:
    good = jsonl([{"input": "a", "expected": "a"}] * 3)
    broken = good + b'{"input": "b", "expected": \n'
    refused = await keel.call("POST", "/api/datasets/files/upload", content=broken)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("line 4: not valid JSON")
    assert (await keel.call("GET", "/api/datasets/files")).status_code == 404  # nothing made
    made = await keel.ok("POST", "/api/datasets/files/upload?filename=items.csv",
                         content=b"input,expected\nx,y\n")  # fmt: skip
    assert (made["version"], made["items"], made["source"]) == (1, 1, "file:items.csv")


async def test_a_thousand_traces_become_one_version_in_one_call(keel: Keel) -> None:
    rows = [
        record(i, input=json.dumps([{"role": "user", "content": f"question {i}"}]),
               output=f"answer {i}", route="support" if i % 2 else "other")
        for i in range(1, 2001)
    ]  # fmt: skip
    keel.services.tracing.store.write(rows)
    version = await keel.ok("POST", "/api/datasets/support-log/from-traces",
                            json={"route": "support", "limit": 5000})  # fmt: skip
    assert (version["version"], version["items"], version["source"]) == (1, 1000, "traces")
    items = (await keel.ok("GET", "/api/datasets/support-log/items?limit=1000"))["data"]
    assert len(items) == 1000
    sample = items[0]
    number = int(sample["source_trace_id"], 16)
    assert sample["input"] == {"messages": [{"role": "user", "content": f"question {number}"}]}
    assert sample["expected"] == f"answer {number}"
    assert sample["metadata"]["route"] == "support"
    none = await keel.call("POST", "/api/datasets/empty/from-traces", json={"route": "nope"})
    assert none.status_code == 400
    assert "no chat trace" in none.json()["error"]["message"]
    assert (await keel.call("GET", "/api/datasets/empty")).status_code == 404


async def test_an_experiment_scores_every_item_through_the_gateway(keel: Keel) -> None:
    await quiz(keel)
    started = await keel.ok("POST", "/api/experiments", json=spec(repeat=2, label="main"))
    (run,) = started["data"]
    assert run["progress"]["total"] == 8
    assert run["state"] == "queued"
    done = await keel.finished(run["id"])
    assert done["state"] == "succeeded"
    summary = done["summary"]
    assert summary["items"] == 4
    assert summary["samples"] == 8
    assert summary["errors"] == 0
    assert summary["metrics"]["accuracy"]["mean"] == 0.75  # the echo gets Berlin/Bonn wrong
    assert summary["pass_rate"] == 0.75
    assert summary["metrics"]["latency"]["direction"] == "lower"
    assert len(keel.upstream.requests) == 8
    assert all(r["temperature"] == 0 for r in keel.upstream.requests)
    items = (await keel.ok("GET", f"/api/experiments/{run['id']}/items"))["data"]
    assert [i["passed"] for i in items] == [True, True, False, True]
    assert all(len(i["trace_ids"]) == 2 for i in items)
    await keel.services.tracing.recorder.flush()
    traces = keel.services.tracing.contents(
        "default", TraceFilter(metadata={"experiment_run": run["id"]}), limit=100
    )
    assert len(traces) == 8
    linked = {(t["metadata"]["dataset_item"], t["metadata"]["repeat"]) for t in traces}
    assert linked == {(str(i["item_id"]), r) for i in items for r in ("0", "1")}


async def test_dataset_changes_and_experiment_starts_are_in_the_audit_log(keel: Keel) -> None:
    await quiz(keel)
    await keel.ok("POST", "/api/datasets/quiz/items", json={"items": [{"input": "Oslo"}]})
    (run,) = (await keel.ok("POST", "/api/experiments", json=spec()))["data"]
    await keel.finished(run["id"])
    await keel.ok("DELETE", "/api/datasets/quiz")
    entries = (await keel.ok("GET", "/api/audit", params={"limit": 10}))["data"]
    ours = [e for e in entries if e["target_type"] in ("dataset", "experiment")][::-1]
    assert [(e["action"], e["target_id"]) for e in ours] == [
        ("dataset.create", "quiz"),
        ("dataset.version", "quiz"),
        ("experiment.start", "capitals"),
        ("dataset.delete", "quiz"),
    ]
    assert len({e["actor"] for e in ours}) == 1  # the key that made each change
    assert ours[0]["actor"].startswith("key:")
    assert (ours[0]["after"]["version"], ours[0]["after"]["items"]) == (1, 4)
    assert (ours[1]["after"]["version"], ours[1]["after"]["added"]) == (2, 1)
    assert ours[2]["after"] == {"dataset": "quiz", "runs": [run["id"]]}
    assert ours[3]["before"]["versions"] == 2


async def test_comparison_and_gates_catch_a_regression_and_pass_an_equal_run(keel: Keel) -> None:
    await quiz(keel)
    (base,) = (await keel.ok("POST", "/api/experiments", json=spec(label="main")))["data"]
    await keel.finished(base["id"])
    (equal,) = (await keel.ok("POST", "/api/experiments", json=spec()))["data"]
    await keel.finished(equal["id"])
    keel.upstream.echo = False  # the candidate answers everything the same, wrong, way
    (worse,) = (await keel.ok("POST", "/api/experiments", json=spec()))["data"]
    await keel.finished(worse["id"])
    gates = {"gates": ["accuracy>=0.5", "delta(accuracy)>=-0.02"], "baseline": "main"}
    passed = await keel.ok("POST", f"/api/experiments/{equal['id']}/gates", json=gates)
    assert passed["passed"]
    assert [g["passed"] for g in passed["gates"]] == [True, True]
    failed = await keel.ok("POST", f"/api/experiments/{worse['id']}/gates", json=gates)
    assert not failed["passed"]
    assert [g["passed"] for g in failed["gates"]] == [False, False]
    assert '<failure message="Δaccuracy = -0.7500' in failed["junit"]
    comparison = await keel.ok("POST", "/api/comparisons",
                               json={"runs": ["main", equal["id"], worse["id"]]})  # fmt: skip
    diff = comparison["differences"][worse["id"]]["accuracy"]
    assert (diff["mean"], diff["worse"], diff["better"]) == (-0.75, 3, 0)
    assert comparison["differences"][equal["id"]]["accuracy"]["mean"] == 0.0
    changed = [row for row in comparison["items"] if row["changed"]]
    assert len(changed) == 4  # every answer changed, three verdicts with them
    cells = changed[0]["runs"]
    assert cells[worse["id"]]["output"] == "Hello from the fake upstream."


async def test_bad_experiments_are_refused_whole_naming_the_field(keel: Keel) -> None:
    await quiz(keel)
    cases = [
        (
            spec(scorers=[{"type": "exact"}, {"type": "f1"}]),
            400,
            "scorers[1].type",
            "unknown scorer 'f1'",
        ),
        (
            spec(scorers=[{"type": "judge", "route": "no-such-judge", "rubric": "ok?"}]),
            400,
            "scorers[0].route",
            "judge route 'no-such-judge' does not exist",
        ),
        (spec(subjects=[{"model": "gpt-9"}]), 404, "subjects[0].model", "unknown model 'gpt-9'"),
        (spec(dataset="nope"), 404, "dataset", "no dataset 'nope'"),
        (
            spec(subjects=[{"model": "fake-model", "params": {"temperature": "hot"}}]),
            400,
            "subjects[0]",
            "temperature",
        ),
    ]
    for body, status, param, words in cases:
        response = await keel.call("POST", "/api/experiments", json=body)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == param
        assert words in error["message"]
    assert (await keel.ok("GET", "/api/experiments"))["data"] == []  # no run half-made
    unknown = await keel.call("POST", "/api/experiments", json={**spec(), "colour": "red"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "colour"


async def test_the_judge_s_schema_reaches_the_upstream_unchanged(keel: Keel) -> None:
    await quiz(keel)
    keel.upstream.echo = False
    keel.upstream.reply = '{"score": 5}'
    body = spec(scorers=[{"type": "judge", "route": "fake-model", "rubric": "Correct?"}])
    (run,) = (await keel.ok("POST", "/api/experiments", json=body))["data"]
    done = await keel.finished(run["id"])
    assert done["summary"]["metrics"]["judge"]["mean"] == 1.0
    judged = [r for r in keel.upstream.requests if "response_format" in r]
    assert len(judged) == 4
    assert judged[0]["response_format"] == {
        "type": "json_object",
        "schema": {
            "type": "object",
            "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
            "required": ["score"],
            "additionalProperties": False,
        },
    }
