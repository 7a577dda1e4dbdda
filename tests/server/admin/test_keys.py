"""Managing keys over /api/keys: shown once, never listed, revoked at once, audited."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from keel.auth.tables import ApiKey
from tests.server.test_limits import chat, services_of

Gateway = tuple[httpx.AsyncClient, str]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_key_is_shown_once_and_never_listed(gateway: Gateway) -> None:
    client, admin = gateway
    created = await client.post("/api/keys", json={"name": "svc", "role": "app",
                                "scopes": {"routes": ["fake-model"]}, "limits": {"rpm": 60}},
                                headers=auth(admin))  # fmt: skip
    assert created.status_code == 201, created.text
    token, view = created.json()["key"], created.json()["data"]
    assert token.startswith(view["prefix"])
    assert created.headers["cache-control"] == "no-store"
    assert (view["scopes"], view["limits"]) == ({"routes": ["fake-model"]}, {"rpm": 60})
    listed = (await client.get("/api/keys", headers=auth(admin))).text
    shown = (await client.get(f"/api/keys/{view['id']}", headers=auth(admin))).text
    secret = token.removeprefix(view["prefix"])  # may itself hold "_" (urlsafe base64)
    for text in (listed, shown):
        assert view["id"] in text
        assert secret not in text
        assert "secret_hash" not in text
        assert "salt" not in text


async def test_revoking_blocks_the_next_request_and_is_audited(gateway: Gateway) -> None:
    client, admin = gateway
    created = (await client.post("/api/keys", json={"name": "ci"}, headers=auth(admin))).json()
    token, key_id = created["key"], created["data"]["id"]
    assert (await chat(client, token)).status_code == 200  # now cached in this process
    revoked = await client.delete(f"/api/keys/{key_id}", headers=auth(admin))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert (await chat(client, token)).status_code == 401
    entries = (await client.get("/api/audit", params={"target_type": "key"},
                                headers=auth(admin))).json()["data"]  # fmt: skip
    assert [e["action"] for e in entries[:2]] == ["key.revoke", "key.create"]
    assert entries[0]["before"]["revoked_at"] is None
    assert entries[0]["ip"]  # the caller's address
    assert "key" not in entries[1]["after"]  # the secret is never in the audit log


async def test_last_used_is_written_in_the_background_not_per_request(gateway: Gateway) -> None:
    client, admin = gateway
    created = (await client.post("/api/keys", json={}, headers=auth(admin))).json()
    token, key_id = created["key"], created["data"]["id"]
    services = services_of(client)
    for _ in range(3):
        assert (await chat(client, token)).status_code == 200

    def last_used() -> object:
        with services.database.session() as session:
            return session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))

    assert last_used() is None  # requests wrote nothing to the database
    await services.access.usage.flush()
    assert last_used() is not None
    shown = (await client.get(f"/api/keys/{key_id}", headers=auth(admin))).json()
    assert shown["last_used_at"] is not None


async def test_rejected_keys_are_summarised_in_the_audit_log(gateway: Gateway) -> None:
    client, admin = gateway
    for n in range(5):
        bad = await chat(client, f"keel_sk_guess{n}_{'x' * 43}")
        assert bad.status_code == 401
    await services_of(client).access.usage.flush()
    entries = (await client.get("/api/audit", params={"action": "key.rejected"},
                                headers=auth(admin))).json()["data"]  # fmt: skip
    assert len(entries) == 1
    assert entries[0]["after"]["count"] == 5


async def test_audit_rows_cannot_be_changed_through_the_api(gateway: Gateway) -> None:
    client, admin = gateway
    for method in ("PUT", "PATCH", "DELETE"):
        response = await client.request(method, "/api/audit", headers=auth(admin))
        assert response.status_code == 405
