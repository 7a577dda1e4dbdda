"""Projects, users and memberships: tenants are isolated, user keys follow their role."""

from __future__ import annotations

import httpx

from tests.server.admin.test_keys import auth
from tests.server.test_limits import chat

Gateway = tuple[httpx.AsyncClient, str]


async def other_project_admin(client: httpx.AsyncClient, admin: str) -> str:
    created = await client.post("/api/projects", json={"name": "other"}, headers=auth(admin))
    assert created.status_code == 201, created.text
    key = await client.post("/api/keys", params={"project": "other"},
                            json={"role": "admin", "name": "other admin"},
                            headers=auth(admin))  # fmt: skip
    assert key.status_code == 201, key.text
    assert key.json()["data"]["project_id"] == "other"
    token: str = key.json()["key"]
    return token


async def test_another_projects_keys_and_users_are_404(gateway: Gateway) -> None:
    client, admin = gateway
    mine = (await client.post("/api/keys", json={}, headers=auth(admin))).json()["data"]["id"]
    user = (await client.post("/api/users", json={"name": "ada", "role": "developer"},
                              headers=auth(admin))).json()["id"]  # fmt: skip
    outsider = await other_project_admin(client, admin)
    for method, path in [
        ("GET", f"/api/keys/{mine}"),
        ("DELETE", f"/api/keys/{mine}"),
        ("GET", f"/api/users/{user}"),
        ("DELETE", f"/api/users/{user}/membership"),
        ("GET", "/api/keys?project=default"),
        ("GET", "/api/users?project=default"),
        ("GET", "/api/projects/default"),
    ]:
        response = await client.request(method, path, headers=auth(outsider))
        assert response.status_code == 404, (method, path, response.text)
    listed = (await client.get("/api/keys", headers=auth(outsider))).json()
    assert [k["project_id"] for k in listed] == ["other"]
    projects = (await client.get("/api/projects", headers=auth(outsider))).json()
    assert [p["id"] for p in projects] == ["other"]
    # The key is untouched: it still works in its own project.
    assert (await client.get(f"/api/keys/{mine}", headers=auth(admin))).status_code == 200


async def test_only_admins_of_default_create_projects_or_change_limits(gateway: Gateway) -> None:
    client, admin = gateway
    outsider = await other_project_admin(client, admin)
    created = await client.post("/api/projects", json={"name": "third"}, headers=auth(outsider))
    assert created.status_code == 403
    limits = await client.put("/api/projects/other/limits", json={"rpm": 10 ** 6},
                              headers=auth(outsider))  # fmt: skip
    assert limits.status_code == 403
    assert "default" in limits.json()["error"]["message"]


async def test_a_user_key_acts_with_the_users_role_until_removed(gateway: Gateway) -> None:
    client, admin = gateway
    user = (await client.post("/api/users", json={"name": "bo", "role": "developer"},
                              headers=auth(admin))).json()  # fmt: skip
    created = await client.post("/api/keys", json={"user_id": user["id"], "name": "bo's"},
                                headers=auth(admin))  # fmt: skip
    assert created.status_code == 201, created.text
    token = created.json()["key"]
    assert created.json()["data"]["role"] == "developer"
    assert (await chat(client, token)).status_code == 200
    downgraded = await client.put(f"/api/users/{user['id']}/membership", json={"role": "viewer"},
                                  headers=auth(admin))  # fmt: skip
    assert downgraded.status_code == 200
    assert (await chat(client, token)).status_code == 403  # viewers may not call models
    assert (await client.get("/api/routes", headers=auth(token))).status_code == 200
    removed = await client.delete(f"/api/users/{user['id']}/membership", headers=auth(admin))
    assert removed.status_code == 200
    assert (await client.get("/api/routes", headers=auth(token))).status_code == 401


async def test_disabling_a_project_revokes_its_keys(gateway: Gateway) -> None:
    client, admin = gateway
    outsider = await other_project_admin(client, admin)
    assert (await client.get("/api/keys", headers=auth(outsider))).status_code == 200
    disabled = await client.delete("/api/projects/other", headers=auth(admin))
    assert disabled.status_code == 200
    assert disabled.json()["disabled_at"] is not None
    assert (await client.get("/api/keys", headers=auth(outsider))).status_code == 401
    refused = await client.post("/api/keys", params={"project": "other"}, json={},
                                headers=auth(admin))  # fmt: skip
    assert refused.status_code == 400
