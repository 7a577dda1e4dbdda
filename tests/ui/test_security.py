"""Console security: cookie flags, CSRF and origin checks, role enforcement, no secrets."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from keel.auth.keys import parse_key
from keel.auth.permissions import allowed
from keel.ui.web import UiRequire
from tests.ui.conftest import PROVIDER_SECRET, Console, csrf_of, login

PUBLIC = {"/ui/login", "/ui/logout"}  # they check the session or the login nonce themselves


def set_cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers}")


async def test_the_session_cookie_is_httponly_strict_and_scoped_to_ui(console: Console) -> None:
    async with console.client() as client:
        response = await login(client, console.keys["admin"])
    assert response.status_code == 303
    header = set_cookie(response, "keel_session")
    cookie = SimpleCookie(header)["keel_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "strict"
    assert cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP: a Secure cookie would never come back


async def test_over_https_the_cookie_is_secure(console: Console) -> None:
    async with console.client("https://keel") as client:
        response = await login(client, console.keys["admin"])
    assert SimpleCookie(set_cookie(response, "keel_session"))["keel_session"]["secure"] is True


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["admin"])
        split = {"weight:chat@1": "50", "add_model": "chat@2", "add_weight": "50"}
        missing = await client.post("/ui/routes/chat/split", data=split)
        wrong = await client.post("/ui/routes/chat/split", data={**split, "csrf_token": "x" * 43})
        assert missing.status_code == wrong.status_code == 403
        assert "CSRF" in missing.text
        route = console.services.registry.get_route("default", "chat")
        assert route["targets"] == {"chat@1": 100}
        # Posted from another site, even with the right token: refused.
        page = await client.get("/ui/routes")
        foreign = await client.post(
            "/ui/routes/chat/split", data={**split, "csrf_token": csrf_of(page.text)},
            headers={"Origin": "https://evil.example"},
        )  # fmt: skip
        assert foreign.status_code == 403
        same = await client.post(
            "/ui/routes/chat/split", data={**split, "csrf_token": csrf_of(page.text)},
            headers={"Origin": "http://keel"},
        )  # fmt: skip
        assert same.status_code == 303
    assert console.services.registry.get_route("default", "chat")["targets"] == {
        "chat@1": 50, "chat@2": 50,
    }  # fmt: skip


async def test_login_needs_the_forms_csrf_token(console: Console) -> None:
    async with console.client() as client:
        await client.get("/ui/login")
        response = await client.post("/ui/login", data={"api_key": console.keys["admin"]})
        assert response.status_code == 403
        assert "keel_session" not in response.headers.get("set-cookie", "")


async def test_a_viewer_sees_no_write_controls_and_every_write_is_refused(
    console: Console,
) -> None:
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        for path in ("/ui/", "/ui/routes", "/ui/prompts", "/ui/prompts/support", "/ui/traces",
                     "/ui/audit", "/ui/guard"):  # fmt: skip
            html = (await client.get(path)).text
            actions = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', html)
            assert actions == ["/ui/logout"], (path, actions)
            assert "Move label" not in html
            assert "Save split" not in html
        page = await client.get("/ui/routes")
        token = csrf_of(page.text)
        refused = await client.post(
            "/ui/routes/chat/split", data={"csrf_token": token, "weight:chat@1": "1"}
        )
        assert refused.status_code == 403
        assert "may not routes:write" in refused.text
        moved = await client.post(
            "/ui/prompts/support/labels",
            data={"csrf_token": token, "label": "production", "version": "2", "confirm": "yes"},
        )
        assert moved.status_code == 403
        for admin_page in ("/ui/keys", "/ui/users", "/ui/projects"):
            assert (await client.get(admin_page)).status_code == 403
    assert console.services.registry.get_route("default", "chat")["targets"] == {"chat@1": 100}
    assert console.services.prompts is not None
    record = console.services.prompts.get("default", "support", label="production")
    assert record.version == 1


def ui_routes(app: FastAPI) -> list[tuple[str, set[str], APIRoute]]:
    return [
        (context.path, set(context.route.methods), context.route)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.route, APIRoute) and context.path.startswith("/ui")
    ]


def permission_of(route: APIRoute) -> str | None:
    found = [d.call.permission for d in route.dependant.dependencies
             if isinstance(d.call, UiRequire)]  # fmt: skip
    return found[0] if found else None


async def test_every_console_route_declares_a_permission_and_posts_enforce_it(
    console: Console,
) -> None:
    routes = ui_routes(console.app)  # type: ignore[arg-type]
    assert len(routes) > 20
    undeclared = [p for p, _, r in routes if p not in PUBLIC and permission_of(r) is None]
    assert undeclared == []
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        token = csrf_of((await client.get("/ui/")).text)
        for path, methods, route in routes:
            permission = permission_of(route)
            if "POST" not in methods or permission is None:
                continue
            url = re.sub(r"\{[^}]+\}", "x", path)
            response = await client.post(url, data={"csrf_token": token})
            refused = response.status_code == 403
            assert refused is not allowed("viewer", permission), (path, response.status_code)


async def test_no_page_contains_a_secret(console: Console) -> None:
    admin_key = console.keys["admin"]
    _, admin_secret = parse_key(admin_key) or ("", "")
    keel_secret = (console.services.settings.data_dir / "secret.key").read_text().strip()
    secrets = {
        "provider API key": PROVIDER_SECRET,
        "admin key secret": admin_secret,
        "viewer key": console.keys["viewer"],
        "Keel secret key": keel_secret,
    }
    # A request whose trace carries the admin key's id (never its secret).
    async with console.client() as api:
        answer = await api.post(
            "/v1/chat/completions", json={"prompt": {"name": "support",
            "variables": {"product": "boats"}}},
            headers={"Authorization": f"Bearer {admin_key}"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
    await console.services.tracing.recorder.flush()
    trace_id = answer.headers["x-keel-trace-id"]
    pages = ["/ui/", "/ui/?range=7d&by=route", "/ui/traces", f"/ui/traces/{trace_id}",
             "/ui/prompts", "/ui/prompts/support", "/ui/prompts/support/edit",
             "/ui/prompts/support/diff?from=1&to=2", "/ui/routes", "/ui/guard", "/ui/audit",
             "/ui/keys?revoked=true", "/ui/users", "/ui/projects"]  # fmt: skip
    async with console.client() as client:
        await login(client, admin_key)
        for path in pages:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
            for what, secret in secrets.items():
                assert secret not in response.text, f"{what} on {path}"
