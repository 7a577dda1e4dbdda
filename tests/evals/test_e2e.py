"""Evaluation end to end on a real `keel serve` with the bundled SmolLM2: two prompt
versions compared by `keel eval run` with gates. A version that drops the answer format
fails the delta gate (exit 1, JUnit failure); a rerun of the same version passes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.client import Client
from tests.support.keel_process import KeelProcess, start_keel

pytestmark = pytest.mark.e2e

COUNTRIES = ["France", "Italy", "Spain", "Germany", "Japan", "Egypt", "Canada", "Peru"]
FORMATTED = [
    {"role": "system", "content": "Reply in the form 'ANSWER: <city>' and nothing else."},
    {"role": "user", "content": "What is the capital of Portugal?"},
    {"role": "assistant", "content": "ANSWER: Lisbon"},
    {"role": "user", "content": "What is the capital of {{ country }}?"},
]
# The planted regression: the same question without the answer format.
UNFORMATTED = [{"role": "user", "content": "Tell me about the capital of {{ country }}."}]


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelProcess]:
    process = start_keel(tmp_path_factory.mktemp("keel-evals") / "data")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def setup(keel: KeelProcess) -> dict[str, int]:
    """Prompt `capitals` v1 (formatted) and v2 (format dropped), and the dataset."""
    versions = {}
    for key, messages in (("formatted", FORMATTED), ("dropped", UNFORMATTED)):
        body = {"messages": messages, "variables": [{"name": "country"}],
                "config": {"model": "smollm2", "temperature": 0, "max_tokens": 12},
                "message": key}  # fmt: skip
        versions[key] = keel.api("POST", "/api/prompts/capitals/versions", body)["version"][
            "version"
        ]
    items = [{"input": {"variables": {"country": c}}} for c in COUNTRIES]
    keel.api("POST", "/api/datasets", {"name": "capitals", "items": items})
    return versions


def write_eval(folder: Path, version: int, label: str | None = None) -> Path:
    spec: dict[str, Any] = {
        "name": "capitals",
        "dataset": "capitals",
        "subjects": [{"prompt": f"capitals@{version}"}],
        "scorers": [
            {"type": "regex", "name": "format", "pattern": r"^\s*ANSWER:"},
            {"type": "latency", "threshold": 60000},
        ],
        "gates": ["delta(format)>=-0.02"],
    }
    if label:
        spec["label"] = label
    path = folder / f"eval-{version}-{label}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_dropped_answer_format_fails_the_gate_and_an_equal_version_passes(
    keel: KeelProcess, setup: dict[str, int], tmp_path: Path
) -> None:
    formatted, dropped = setup["formatted"], setup["dropped"]
    base = keel.cli(
        "eval",
        "run",
        "-f",
        str(write_eval(tmp_path, formatted, "main")),
        "--json",
        str(tmp_path / "base.json"),
        "--junit",
        str(tmp_path / "base.xml"),
    )
    assert "a delta gate needs a baseline" in base.stdout  # no baseline yet: the gate fails
    assert base.returncode == 1
    baseline = json.loads((tmp_path / "base.json").read_text())["runs"][0]
    assert baseline["summary"]["metrics"]["format"]["mean"] >= 0.75, baseline["summary"]

    equal = keel.cli("eval", "run", "-f", str(write_eval(tmp_path, formatted)), "--baseline",
                     "main", "--json", str(tmp_path / "equal.json"), "--junit",
                     str(tmp_path / "equal.xml"))  # fmt: skip
    assert equal.returncode == 0, equal.stdout + equal.stderr
    assert "Against the baseline" in equal.stdout
    assert "pass" in equal.stdout
    assert 'failures="0"' in (tmp_path / "equal.xml").read_text().split("<testsuite ", 2)[1]

    planted = keel.cli("eval", "run", "-f", str(write_eval(tmp_path, dropped)), "--baseline",
                       "main", "--json", str(tmp_path / "planted.json"), "--junit",
                       str(tmp_path / "planted.xml"))  # fmt: skip
    assert planted.returncode == 1, planted.stdout + planted.stderr
    assert "FAIL" in planted.stdout
    assert "a gate failed" in planted.stderr
    report = json.loads((tmp_path / "planted.json").read_text())
    diff = report["comparison"]["differences"][report["runs"][0]["id"]]["format"]
    assert diff["ci_high"] < -0.02
    assert diff["worse"] >= 4
    assert '<failure message="Δformat' in (tmp_path / "planted.xml").read_text()


def test_the_client_reads_runs_items_and_comparisons(
    keel: KeelProcess, setup: dict[str, int]
) -> None:
    with Client(keel.base_url, keel.api_key) as client:
        assert [d.name for d in client.datasets.list()] == ["capitals"]
        (run,) = client.experiments.run(
            {"name": "client", "dataset": "capitals", "subjects": [
                {"prompt": f"capitals@{setup['formatted']}"}],
             "scorers": [{"type": "contains", "name": "answer", "value": "ANSWER"}],
             "repeat": 2}, timeout=600,
        )  # fmt: skip
        assert run.state == "succeeded"
        assert run.summary is not None
        assert run.summary["samples"] == 2 * len(COUNTRIES)
        items = client.experiments.items(run.id)
        assert len(items) == len(COUNTRIES)
        assert all(len(i["outputs"]) == 2 for i in items)
        trace = keel.api("GET", f"/api/traces/{items[0]['trace_ids'][0]}")
        assert trace["metadata"]["experiment_run"] == run.id
        assert trace["prompt_name"] == "capitals"
        comparison = client.comparisons.compare([run.id, run.id])
        assert comparison["differences"][run.id]["answer"]["mean"] == 0.0
