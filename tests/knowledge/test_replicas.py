"""Two `keel serve` replicas over one PostgreSQL and one Redis, each with the bundled MiniLM:
what is ingested through one is searched, identically, through the other (each replica
reads the base's row again on a change event and rebuilds its index when the revision moved
on)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.knowledge.samples import HTML, MARKDOWN
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.redis import temporary_redis_prefix
from tests.support.services import temporary_postgres_database

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
QUERIES = ("paid holiday", "password manager", "how do I report an incident", "expenses")
NOTES = b"Expenses are reimbursed within 14 days of the receipt being uploaded.\n"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeelProcess, ...]]:
    root: Path = tmp_path_factory.mktemp("kb-replicas")
    with temporary_postgres_database() as database, temporary_redis_prefix() as (url, prefix):
        shared = {"KEEL_DATABASE_URL": database, "KEEL_REDIS_URL": url,
                  "KEEL_REDIS_PREFIX": prefix}  # fmt: skip
        a = start_keel(root / "a", "--no-local-model", env=shared)  # creates the admin key
        b = start_keel(root / "b", "--no-local-model", env=shared)
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()


def _call(keel: KeelProcess, key: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{keel.base_url}/api/kbs{path}", timeout=120,
                             headers={"Authorization": f"Bearer {key}"}, **kwargs)  # fmt: skip
    assert response.status_code < 400, response.text
    return response.json()


def _top(keel: KeelProcess, key: str, query: str) -> list[tuple[int, float]]:
    found = _call(keel, key, "POST", "/handbook/search", json={"query": query, "top_k": 10})
    return [(hit["chunk_id"], round(hit["score"], 4)) for hit in found["data"]]


def test_an_ingest_on_one_replica_is_searched_the_same_on_the_other(
    replicas: tuple[KeelProcess, KeelProcess],
) -> None:
    a, b = replicas
    key = a.api_key
    _call(a, key, "POST", "", json={"name": "handbook"})
    for source, data in (("handbook.md", MARKDOWN), ("security.html", HTML)):
        _call(a, key, "POST", "/handbook/documents", params={"source": source}, content=data)
    for query in QUERIES:
        on_a = _top(a, key, query)
        assert on_a
        assert _top(b, key, query) == on_a, query

    # The other way round, after A's row and index are warm: B's ingest reaches A as a change
    # event through Redis (delivered within moments, not on A's next store read).
    _call(b, key, "POST", "/handbook/documents", params={"source": "notes.txt"}, content=NOTES)
    on_b = _top(b, key, "reimbursed receipt")
    deadline = time.monotonic() + 10
    while _top(a, key, "reimbursed receipt") != on_b and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _top(a, key, "reimbursed receipt") == on_b
    first = _call(a, key, "POST", "/handbook/search", json={"query": "reimbursed receipt"})
    assert first["data"][0]["source"] == "notes.txt"
