from __future__ import annotations

import httpx

from keel.auth import audit

Gateway = tuple[httpx.AsyncClient, str]


async def test_audit_lists_newest_first_with_cursor_pages(gateway: Gateway) -> None:
    client, key = gateway
    services = client._transport.app.state.services  # type: ignore[attr-defined]
    with services.database.session() as session:
        for index in range(5):
            audit.record(session, "cli", "route.update", "route", "chat-default",
                         before={"v": index}, after={"v": index + 1})  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    first = (await client.get("/api/audit", params={"limit": 3}, headers=headers)).json()
    assert [e["after"]["v"] for e in first["data"]] == [5, 4, 3]
    rest = (
        await client.get(
            "/api/audit", params={"limit": 3, "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    assert [e["after"]["v"] for e in rest["data"]] == [2, 1]
    assert rest["next_cursor"] is None
    assert first["data"][0]["actor"] == "cli"
