from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from keel.gitops.api import KeelAPI


@pytest.fixture
async def api(gateway: tuple[httpx.AsyncClient, str]) -> AsyncIterator[KeelAPI]:
    """The /api client `keel apply` uses, talking to an in-process Keel."""
    client, key = gateway
    async with httpx.AsyncClient(
        transport=client._transport,
        base_url="http://keel",
        headers={"Authorization": f"Bearer {key}"},
    ) as authed:
        yield KeelAPI(authed)
