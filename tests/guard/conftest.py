from __future__ import annotations

import json

import pytest

from keel.guard.injection import InjectionScanner
from keel.guard.policy import GuardResources, Policy


@pytest.fixture(scope="session")
def resources() -> GuardResources:
    """One loaded injection model and MiniLM for the whole guard test session."""
    return GuardResources()


@pytest.fixture(scope="session")
def injection(resources: GuardResources) -> InjectionScanner:
    scanner = resources.injection(None, "block")
    assert isinstance(scanner, InjectionScanner)
    return scanner


@pytest.fixture(scope="session")
def default_policy(resources: GuardResources) -> Policy:
    return Policy.builtin("default", resources)


@pytest.fixture(scope="session")
def labelled_texts() -> list[str]:
    """Every other text of the guard's labelled data (../shared/data/guard), or none when
    this checkout has no data beside it."""
    from training.guard.train import DEFAULT_DATA

    texts: list[str] = []
    for name in ("train.jsonl", "validation.jsonl"):
        path = DEFAULT_DATA / name
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            texts += [json.loads(line)["text"] for line in lines[::2] if line.strip()]
    return texts


@pytest.fixture(scope="session")
def pii_texts() -> list[str]:
    """The labelled PII texts (../shared/data/pii), or none when they are not there."""
    from training.guard.evaluate import DEFAULT_PII_DATA

    if not DEFAULT_PII_DATA.is_file():
        return []
    records = json.loads(DEFAULT_PII_DATA.read_text(encoding="utf-8"))
    return [str(r["full_text"]) for r in records]
