"""Two Keel processes over one PostgreSQL and one Redis enforce limits and revocation together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.keel_process import KeelProcess
from tests.support.pair import two_keels

pytestmark = pytest.mark.e2e
# The prompt of this body is estimated at 7 tokens and max_tokens is 5: the stub reports 7 + 5,
# so each reservation equals the real usage and the count of admitted requests is exact.
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeelProcess, KeelProcess]]:
    with two_keels(tmp_path_factory.mktemp("shared-limits")) as keels:
        yield keels


def new_key(keel: KeelProcess, **spec: object) -> str:
    key: str = keel.api("POST", "/api/keys", spec)["key"]
    return key


async def _spread(pair: tuple[KeelProcess, KeelProcess], key: str, count: int) -> list[int]:
    """`count` requests, alternating between the two processes, 20 at a time."""
    headers = {"Authorization": f"Bearer {key}"}
    statuses: list[int] = []
    async with (
        httpx.AsyncClient(base_url=pair[0].base_url, headers=headers, timeout=30) as a,
        httpx.AsyncClient(base_url=pair[1].base_url, headers=headers, timeout=30) as b,
    ):
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                response = await (a if n % 2 else b).post("/v1/chat/completions", json=BODY)
                statuses.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(20)))
    return statuses


def test_two_processes_admit_one_60_rpm_limit_together(
    pair: tuple[KeelProcess, KeelProcess],
) -> None:
    key = new_key(pair[0], name="rpm", limits={"rpm": 60})
    statuses = asyncio.run(_spread(pair, key, 200))
    assert set(statuses) <= {200, 429}
    assert abs(statuses.count(200) - 60) <= 1, statuses.count(200)


def test_two_processes_admit_one_tpm_limit_together(
    pair: tuple[KeelProcess, KeelProcess],
) -> None:
    key = new_key(pair[0], name="tpm", limits={"tpm": 600})  # 50 requests of 12 tokens
    statuses = asyncio.run(_spread(pair, key, 200))
    assert set(statuses) <= {200, 429}
    assert abs(statuses.count(200) - 50) <= 1, statuses.count(200)


def test_a_revoked_key_is_refused_by_both_processes(
    pair: tuple[KeelProcess, KeelProcess],
) -> None:
    a, b = pair
    created = a.api("POST", "/api/keys", {"name": "to revoke"})
    headers = {"Authorization": f"Bearer {created['key']}"}
    for keel in (a, b):  # each process has the key in its cache now
        response = httpx.post(f"{keel.base_url}/v1/chat/completions", json=BODY, headers=headers)
        assert response.status_code == 200
    a.api("DELETE", f"/api/keys/{created['data']['id']}")
    on_a = httpx.post(f"{a.base_url}/v1/chat/completions", json=BODY, headers=headers)
    assert on_a.status_code == 401
    # Only the change event over Redis tells B (its cache has no expiry and nothing polls):
    # the deadline is long enough for a loaded machine, not a speed claim.
    deadline = time.monotonic() + 10.0
    while True:
        on_b = httpx.post(f"{b.base_url}/v1/chat/completions", json=BODY, headers=headers)
        if on_b.status_code == 401 or time.monotonic() > deadline:
            break
    assert on_b.status_code == 401


def test_token_reservations_are_reconciled_across_processes(
    pair: tuple[KeelProcess, KeelProcess],
) -> None:
    key = new_key(pair[0], name="reconciled", limits={"tpm": 600})
    headers = {"Authorization": f"Bearer {key}"}
    body = {**BODY, "max_tokens": 50}  # reserves 7 + 50; the answer uses 12
    statuses = []
    for n in range(60):  # one at a time, alternating: each settles before the next is admitted
        keel = pair[n % 2]
        response = httpx.post(f"{keel.base_url}/v1/chat/completions", json=body, headers=headers)
        statuses.append(response.status_code)
    # Reservations alone would admit 10 (10 * 57 ≤ 600); real usage admits 46 (45 * 12 + 57).
    assert statuses.count(200) == 46
    assert statuses[46:] == [429] * 14
