from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from keel.server.app import create_app
from keel.server.services import stop_services
from tests.support.app import build_services
from tests.support.services import temporary_postgres_database
from tests.support.upstream import FakeUpstream


def pytest_configure(config: pytest.Config) -> None:
    # Rich fixes a console's width from COLUMNS when the console is built, and the CLI's are
    # built at import. The CLI tests set COLUMNS per test, which holds only when none was set
    # at import: pytest-xdist's workers start with COLUMNS=80 and LINES=24.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


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
