from __future__ import annotations

import httpx

from keel.server.services import Services

Gateway = tuple[httpx.AsyncClient, str]


def services_of(client: httpx.AsyncClient) -> Services:
    services: Services = client._transport.app.state.services  # type: ignore[attr-defined]
    return services


async def recorded(client: httpx.AsyncClient, key: str, trace_id: str) -> dict[str, object]:
    """The stored trace, after the recorder wrote what it had queued."""
    await services_of(client).tracing.recorder.flush()
    response = await client.get(
        f"/api/traces/{trace_id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    found: dict[str, object] = response.json()
    return found
