from __future__ import annotations

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
