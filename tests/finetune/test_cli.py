"""`keel finetune`: every command documents itself, and --canary splits a route as asked,
only once the job's evaluation passes its gate."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from keel.cli.app import app
from keel.cli.finetune import canary_split, ship_canary


def test_every_finetune_command_has_help() -> None:
    runner = CliRunner()
    for command in ("create", "list", "show", "watch", "cancel"):
        result = runner.invoke(app, ["finetune", command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_a_canary_takes_its_share_from_the_current_targets() -> None:
    assert canary_split({"smollm2@1": 100}, "smollm2@2", 10) == {"smollm2@1": 90, "smollm2@2": 10}
    split = canary_split({"a@1": 3, "a@2": 1, "a@3": 5}, "a@3", 20)
    assert split == {"a@1": 60, "a@2": 20, "a@3": 20}


def test_a_canary_without_an_evaluation_is_refused_before_any_upload() -> None:
    result = CliRunner().invoke(
        app, ["finetune", "create", "x.jsonl", "--canary", "10", "--no-evaluate"]
    )
    assert result.exit_code != 0
    assert "--canary ships on the job's evaluation" in result.output


class Api:
    """The control plane as ship_canary sees it: two finished runs and a gate verdict."""

    def __init__(self, passed: bool):
        self.passed = passed
        self.calls: list[tuple[str, str, Any]] = []
        self.targets = {"smollm2@1": 100}

    def call(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path, body))
        if path.startswith("/api/experiments/") and path.endswith("/gates"):
            message = "Δjson_equal.pass_rate = +0.9700, 95% CI [+0.9300, +1.0000]"
            return {"passed": self.passed, "gates": [{"gate": body["gates"][0],
                                                      "message": message}]}  # fmt: skip
        if path.startswith("/api/experiments/"):
            return {"id": path.rsplit("/", 1)[1], "state": "succeeded",
                    "progress": {"done": 3, "failed": 0, "total": 3}}  # fmt: skip
        if path == "/api/routes/support" and method == "GET":
            return {"targets": self.targets}
        return {}


JOB = {
    "model": "smollm2@1",
    "fine_tuned_model": "smollm2@2",
    "keel": {"result": {"evaluation": {
        "dataset": "finetune-ftjob_1@1", "items": 3, "gate": "delta(json_equal.pass_rate)>=0.1",
        "runs": {"base": "experiment_a", "tuned": "experiment_b"},
    }}},
}  # fmt: skip


def test_a_passing_evaluation_splits_the_route() -> None:
    api = Api(passed=True)
    ship_canary(api, JOB, 10, "support")  # type: ignore[arg-type]
    gate_call = next(c for c in api.calls if c[1].endswith("/gates"))
    assert gate_call[1] == "/api/experiments/experiment_b/gates"
    assert gate_call[2] == {"gates": ["delta(json_equal.pass_rate)>=0.1"],
                            "baseline": "experiment_a"}  # fmt: skip
    assert ("POST", "/api/routes/support/split",
            {"targets": {"smollm2@1": 90, "smollm2@2": 10}}) in api.calls  # fmt: skip


@pytest.mark.parametrize(
    "job",
    [JOB, {**JOB, "keel": {"result": {"evaluation": {"error": "smollm2@2 is not served"}}}}],
)
def test_a_failed_gate_or_a_missing_evaluation_leaves_the_route_alone(
    job: dict[str, Any],
) -> None:
    api = Api(passed=False)
    with pytest.raises(typer.Exit):
        ship_canary(api, job, 10, "support")  # type: ignore[arg-type]
    assert not [c for c in api.calls if c[1].endswith("/split")]


def test_show_names_the_evaluation_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    job = {**JOB, "id": "ftjob_1", "status": "succeeded", "created_at": 0, "error": None}

    class ShowApi:
        def __init__(self, *_: Any) -> None:
            pass

        def call(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
            return {"data": []} if path.endswith("/checkpoints") else job

    monkeypatch.setattr("keel.cli.finetune.Api", ShowApi)
    result = CliRunner().invoke(app, ["finetune", "show", "ftjob_1"])
    assert result.exit_code == 0, result.output
    assert "evaluation: experiment_a (base) and experiment_b (tuned)" in result.output
    assert "keel eval compare experiment_a experiment_b" in result.output
