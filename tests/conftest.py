from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.services import temporary_postgres_database
from tests.support.upstream import FakeUpstream


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def gateway(
    tmp_path: Path, upstream: FakeUpstream
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An in-process Keel over the fake upstream: (client, admin key)."""
    services, key = build_services(tmp_path, upstream.base_url, max_body_bytes=64 * 1024)
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
        yield client, key
    await stop_services(services)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite and on PostgreSQL (a fresh database per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keel.db'}"
        return
    with temporary_postgres_database() as url:
        yield url
