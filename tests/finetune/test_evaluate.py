"""A job's evaluation start: the held-out conversations become the job's dataset, one
experiment runs both versions on it, the audit log says so, and a resumed job finds its runs
instead of starting them twice; a revoked key or a replica that never serves stops it before
anything is stored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from keel.auth.audit import AuditLog
from keel.auth.keys import KeyService, Principal
from keel.errors import InvalidRequest
from keel.evals.datasets import DatasetService
from keel.evals.experiments import ExperimentSpec
from keel.finetune.data import Example
from keel.finetune.evaluate import Evaluator
from keel.finetune.executor import KIND
from keel.jobs.model import Job
from keel.jobs.store import JobStore
from keel.store import migrate
from keel.store.db import Database


@dataclass
class Run:
    id: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiments:
    """Stands in for the evaluation service: records what it was asked to start, and lists
    the runs it started, newest first."""

    started: list[ExperimentSpec] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    def start(self, principal: Principal, spec: ExperimentSpec) -> list[Run]:
        self.started.append(spec)
        made = [
            Run(f"experiment_{len(self.started)}{s}",
                {"experiment": spec.name, "subject": {"model": subject.model}})
            for s, subject in zip("ab", spec.subjects, strict=True)
        ]  # fmt: skip
        self.runs[:0] = made[::-1]
        return made

    def newest(self, project_id: str, pages: int | None = None) -> list[Run]:
        return list(self.runs)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database)
    KeyService(database).ensure_project()
    yield database
    database.dispose()


def examples(n: int) -> list[Example]:
    return [
        Example(i, ({"role": "user", "content": f"review {i}"},
                    {"role": "assistant", "content": f'{{"n": {i}}}'}))
        for i in range(1, n + 1)
    ]  # fmt: skip


def make(
    database: Database, experiments: Experiments, *, key: bool = True, state: str | None = "ready"
) -> Evaluator:
    principal = Principal(key_id="k1", project_id="default", role="developer")
    return Evaluator(
        DatasetService(database, None),  # type: ignore[arg-type]  # no traces read here
        experiments,  # type: ignore[arg-type]
        lambda _key: principal if key else None,
        lambda _ref: {"ready": state == "ready", "state": state} if state else {},
        ready_wait_seconds=0.5,
        no_replica_seconds=0.3,
    )


def job(database: Database, evaluation: dict[str, Any] | None = None) -> Job:
    params = {"model": "smollm2@1", "evaluation": evaluation or {"max_items": 3}}
    return JobStore(database).create(KIND, "default", "k1", params, [])


def test_the_held_out_set_becomes_a_dataset_and_one_experiment_runs_both(
    database: Database,
) -> None:
    experiments = Experiments()
    found = job(database)
    started = make(database, experiments).start(found, "smollm2@1", "smollm2@2", examples(5))
    assert started == {
        "dataset": f"finetune-{found.id}@1",
        "items": 3,  # max_items
        "runs": {"base": "experiment_1a", "tuned": "experiment_1b"},
        "gate": "delta(json_equal.pass_rate)>=0.1",
    }
    (spec,) = experiments.started
    assert [s.model for s in spec.subjects] == ["smollm2@1", "smollm2@2"]
    assert spec.subjects[1].params == {"temperature": 0, "max_tokens": 64}
    assert spec.scorers == [{"type": "json_equal"}]
    _, items = DatasetService(database, None).items(  # type: ignore[arg-type]
        "default", f"finetune-{found.id}", 1
    )
    assert [(i.input["messages"][-1]["content"], i.expected) for i in items] == [
        ("review 1", '{"n": 1}'), ("review 2", '{"n": 2}'), ("review 3", '{"n": 3}'),
    ]  # fmt: skip
    (entry,) = AuditLog(database).list("default", action="fine_tuning_job.evaluate")
    assert entry.target_id == found.id

    # A job resumed after a restart finds the runs it started: none is started twice, even
    # while the new version is not served yet.
    again = make(database, experiments, state="starting").start(
        found, "smollm2@1", "smollm2@2", examples(5)
    )
    assert again == started
    assert len(experiments.started) == 1
    # Another job's experiment is its own.
    other = job(database)
    make(database, experiments).start(other, "smollm2@1", "smollm2@2", examples(5))
    assert len(experiments.started) == 2


@pytest.mark.parametrize(
    ("key", "state", "says"),
    [
        (False, "ready", "revoked or expired"),
        (True, "crashlooping", "is not served (crashlooping)"),
        (True, "starting", "is not served (starting)"),  # past ready_wait_seconds
        (True, None, "no replica of smollm2@2 is deployed by this Keel"),
    ],
)
def test_nothing_is_stored_when_the_evaluation_cannot_run(
    database: Database, key: bool, state: str | None, says: str
) -> None:
    experiments = Experiments()
    found = job(database)
    with pytest.raises(InvalidRequest) as caught:
        make(database, experiments, key=key, state=state).start(
            found, "smollm2@1", "smollm2@2", examples(3)
        )
    assert says in caught.value.message
    assert experiments.started == []
    assert DatasetService(database, None).list("default") == []  # type: ignore[arg-type]
