"""PII on the whole request path: 100 generated texts through a real `keel serve`.

A recording upstream (it answers with the text it received) sits behind Keel, whose guard
policy anonymizes PII. No name, street address, phone number or e-mail of the texts may
reach the upstream or the trace store, and every answer must come back restored. The texts
are `bench/data/pii_e2e.json` (`python -m training.pii.heldout --n 100 --seed 31`): the
held-out generator with a seed of their own, so neither training text nor the bench's set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.keel_process import KeelProcess, start_keel
from tests.support.recording_proxy import LoopThread
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

CHECKED = ("PERSON", "STREET_ADDRESS", "PHONE_NUMBER", "EMAIL_ADDRESS")
POLICY = {"name": "pii-only", "input": [{"type": "pii", "action": "anonymize"}]}
TEXTS = Path(__file__).resolve().parents[2] / "bench" / "data" / "pii_e2e.json"


def texts() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(TEXTS.read_text(encoding="utf-8"))
    return records


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    loop = LoopThread()
    fake = FakeUpstream(echo=True)
    try:
        loop.run(fake.start())
        yield fake
    finally:
        loop.run(fake.stop())
        loop.close()


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[KeelProcess]:
    folder: Path = tmp_path_factory.mktemp("keel-pii")
    config = folder / "keel.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "upstreams": [
                    {"name": "recorder", "base_url": upstream.base_url, "models": ["echo"]}
                ],
                "guard_policy": "pii-only",
                "guard_policies": {"pii-only": POLICY},
            }
        )
    )
    process = start_keel(
        folder / "data", "--config", str(config), "--no-local-model", "--no-embeddings"
    )
    yield process
    process.stop()


def stored_trace(keel: KeelProcess, trace_id: str, wait: float = 30) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    deadline = time.monotonic() + wait
    while True:
        response = httpx.get(f"{keel.base_url}/api/traces/{trace_id}", headers=headers)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            found: dict[str, Any] = response.json()
            return found
        time.sleep(0.1)


def test_no_generated_pii_reaches_the_upstream_or_the_traces_and_answers_are_restored(
    keel: KeelProcess, upstream: FakeUpstream
) -> None:
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    leaks: list[str] = []
    unrestored: list[str] = []
    trace_ids = []
    records = texts()
    for record in records:
        text = record["full_text"]
        before = len(upstream.requests)
        response = httpx.post(
            f"{keel.base_url}/v1/chat/completions",
            headers=headers,
            json={"model": "echo", "messages": [{"role": "user", "content": text}]},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert len(upstream.requests) == before + 1
        sent = json.dumps(upstream.requests[-1], ensure_ascii=False)
        values = [s["entity_value"] for s in record["spans"] if s["entity_type"] in CHECKED]
        leaks += [f"upstream: {v!r}" for v in values if v in sent or json.dumps(v)[1:-1] in sent]
        answer = response.json()["choices"][0]["message"]["content"]
        if answer != text:
            unrestored.append(answer)
        trace_ids.append((response.headers["x-keel-trace-id"], values))

    for trace_id, values in trace_ids:
        stored = json.dumps(stored_trace(keel, trace_id), ensure_ascii=False)
        leaks += [f"trace: {v!r}" for v in values if v in stored or json.dumps(v)[1:-1] in stored]

    assert sum(len([s for s in r["spans"] if s["entity_type"] in CHECKED]) for r in records) > 150
    assert leaks == [], f"{len(leaks)} values leaked: {leaks[:10]}"
    assert unrestored == [], f"{len(unrestored)} answers not restored: {unrestored[:3]}"
