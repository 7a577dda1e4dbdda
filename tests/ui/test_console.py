"""The console's pages and actions, in process, as a signed-in person uses them."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import orjson

from keel.tracing.convert import Converted, span
from keel.tracing.store import TraceFilter
from tests.ui.conftest import Console, csrf_of, login, post_form


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def chat(client: httpx.AsyncClient, key: str) -> httpx.Response:
    response = await client.post(
        "/v1/chat/completions",
        json={"prompt": {"name": "support", "variables": {"product": "boats"}},
              "messages": [{"role": "user", "content": "hi"}]},
        headers=auth(key),
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response


async def test_pages_send_a_signed_out_browser_to_the_login_page(console: Console) -> None:
    async with console.client() as client:
        response = await client.get("/ui/traces?status=error")
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login?next=/ui/traces%3Fstatus%3Derror"
        form = await client.get("/ui/login?next=/ui/traces")
        assert form.status_code == 200
        assert '<label for="api_key">' in form.text
        signed_in = await client.post("/ui/login", data={
            "api_key": console.keys["admin"], "csrf_token": csrf_of(form.text),
            "next": "/ui/traces"})  # fmt: skip
        assert signed_in.headers["location"] == "/ui/traces"
        assert (await client.get("/ui/traces")).status_code == 200


async def test_a_wrong_key_or_an_app_key_cannot_sign_in(console: Console) -> None:
    async with console.client() as client:
        wrong = await login(client, "keel_sk_nope_nope")
        assert wrong.status_code == 401
        assert "invalid API key" in wrong.text
        app = await login(client, console.keys["app"])
        assert app.status_code == 403
        assert "inference only" in app.text
        assert (await client.get("/ui/")).status_code == 303


async def test_logging_out_and_revoking_the_key_both_end_the_session(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["developer"])
        assert (await client.get("/ui/")).status_code == 200
        out = await post_form(client, "/ui/", "/ui/logout", {})
        assert out.status_code == 303
        assert (await client.get("/ui/")).status_code == 303
    async with console.client() as client:
        await login(client, console.keys["developer"])
        assert (await client.get("/ui/")).status_code == 200
        key_id = console.keys["developer"].removeprefix("keel_sk_").split("_")[0]
        console.services.keys.revoke(key_id)
        assert (await client.get("/ui/")).status_code == 303


async def test_overview_charts_count_real_requests(console: Console) -> None:
    async with console.client() as client:
        for _ in range(3):
            await chat(client, console.keys["admin"])
        await console.services.tracing.recorder.flush()
        await login(client, console.keys["viewer"])
        html = (await client.get("/ui/?range=1h")).text
        requests = re.search(r'id="chart-requests" data-total="([0-9.]+)"', html)
        assert requests is not None
        assert float(requests[1]) == 3.0
        assert "<polyline" in html
        assert '<title id="requests-title">Requests</title>' in html
        grouped = (await client.get("/ui/?range=24h&by=model")).text
        assert "fake-model" in grouped
        assert 'id="online-scores"' not in grouped  # no online rule: no table
        # An online rule's scores (as keel.evals.online writes them) get a table per group.
        tracing = console.services.tracing
        [trace] = (await asyncio.to_thread(tracing.list, "default", TraceFilter(), limit=1))[0]
        for value, passed in ((1.0, True), (0.0, False)):
            score = {"name": "format", "kind": "numeric", "number": value, "label": None,
                     "flag": passed, "comment": None, "source": "evaluator",
                     "author": "online:support"}  # fmt: skip
            await asyncio.to_thread(tracing.add_score, "default", trace["trace_id"], score)
        scored = (await client.get("/ui/?range=1h&by=route")).text
        table = scored.split('id="online-scores"')[1].split("</table>")[0]
        assert re.search(r"<td>format</td><td>2</td><td>0.5</td><td>50.0%</td>", table)


async def test_traces_table_filters_and_the_detail_shows_spans_and_chat(console: Console) -> None:
    async with console.client() as client:
        answer = await chat(client, console.keys["admin"])
        await console.services.tracing.recorder.flush()
        trace_id = answer.headers["x-keel-trace-id"]
        await login(client, console.keys["developer"])
        listed = (await client.get("/ui/traces?prompt=support&status=ok")).text
        assert f"/ui/traces/{trace_id}" in listed
        assert f"/ui/traces/{trace_id}" not in (await client.get("/ui/traces?status=error")).text
        detail = (await client.get(f"/ui/traces/{trace_id}")).text
        assert detail.count('class="span-row"') >= 2
        assert "pirate" not in detail
        assert "You answer about boats." in detail
        assert 'href="/ui/prompts/support#v1"' in detail
        here = f"/ui/traces/{trace_id}"
        score = {"name": "helpful", "kind": "numeric", "value": "0.9"}
        scored = await post_form(client, here, f"{here}/scores", score)
        assert scored.status_code == 303
        assert "helpful" in (await client.get(f"/ui/traces/{trace_id}")).text


async def test_moving_a_label_changes_the_version_the_gateway_uses(console: Console) -> None:
    async with console.client() as client:
        before = await chat(client, console.keys["admin"])
        assert before.headers["x-keel-prompt-version"] == "1"
        await login(client, console.keys["developer"])
        unconfirmed = await post_form(client, "/ui/prompts/support", "/ui/prompts/support/labels",
                                      {"label": "production", "version": "2"})  # fmt: skip
        assert unconfirmed.status_code == 400
        move = {"label": "production", "version": "2", "confirm": "yes"}
        moved = await post_form(client, "/ui/prompts/support", "/ui/prompts/support/labels", move)
        assert moved.status_code == 303
        assert (
            'data-label="production" data-version="2"'
            in (await client.get("/ui/prompts/support")).text
        )
        after = await chat(client, console.keys["admin"])
        assert after.headers["x-keel-prompt-version"] == "2"


async def test_diff_editor_preview_and_new_version(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["developer"])
        diff = (await client.get("/ui/prompts/support/diff?from=1&to=2")).text
        assert "<del>" in diff
        assert "<ins>" in diff
        assert "pirate" in diff
        content = ("messages:\n  - role: system\n    content: Hello {{ who }}!\n"
                   "variables:\n  - name: who\n")  # fmt: skip
        sample = {"content": content, "variables": "who: <b>world</b>"}
        preview = await post_form(client, "/ui/prompts/support/edit",
                                  "/ui/prompts/support/preview", sample)  # fmt: skip
        assert preview.status_code == 200
        assert "Hello &lt;b&gt;world&lt;/b&gt;!" in preview.text  # rendered, and escaped
        bad = await post_form(client, "/ui/prompts/support/edit", "/ui/prompts/support/versions",
                              {"content": "messages: []"})  # fmt: skip
        assert bad.status_code == 400
        assert "invalid prompt" in bad.text
        saved = await post_form(client, "/ui/prompts/support/edit", "/ui/prompts/support/versions",
                                {"content": content, "message": "greet"})  # fmt: skip
        assert saved.status_code == 303
        assert "#v3" in saved.headers["location"]


async def test_the_playground_runs_a_version_and_links_its_trace(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["developer"])
        ran = await post_form(client, "/ui/prompts/support", "/ui/prompts/support/playground",
                              {"version": "2", "variables": "product: kayaks",
                               "message": "hello"})  # fmt: skip
        assert ran.status_code == 200, ran.text
        assert 'data-header="X-Keel-Prompt-Version">2<' in ran.text
        assert "Hello from the fake upstream." in ran.text
        trace = re.search(r'href="/ui/traces/([0-9a-f]{32})"', ran.text)
        assert trace is not None
        await console.services.tracing.recorder.flush()
        assert "kayaks" in (await client.get(f"/ui/traces/{trace[1]}")).text


async def test_route_split_promote_and_rollback(console: Console) -> None:
    registry = console.services.registry
    async with console.client() as client:
        await login(client, console.keys["developer"])
        page = (await client.get("/ui/routes")).text
        assert 'data-weight="chat@1">100<' in page
        split = await post_form(client, "/ui/routes", "/ui/routes/chat/split",
                                {"weight:chat@1": "90", "add_model": "chat@2",
                                 "add_weight": "10"})  # fmt: skip
        assert split.status_code == 303
        assert registry.get_route("default", "chat")["targets"] == {"chat@1": 90, "chat@2": 10}
        bad = await post_form(client, "/ui/routes", "/ui/routes/chat/split",
                              {"weight:chat@1": "ten"})  # fmt: skip
        assert bad.status_code == 400
        await post_form(client, "/ui/routes", "/ui/routes/chat/promote", {"model": "chat@2"})
        assert registry.get_route("default", "chat")["targets"] == {"chat@2": 100}
        back = await post_form(client, "/ui/routes", "/ui/routes/chat/rollback", {"confirm": "yes"})
        assert back.status_code == 303
        assert registry.get_route("default", "chat")["targets"] == {"chat@1": 90, "chat@2": 10}
        audit = (await client.get("/ui/audit?target_type=route")).text
        assert "route.rollback" in audit


async def test_admin_pages_create_a_key_shown_once_and_revoke_it(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["admin"])
        created = await post_form(client, "/ui/keys", "/ui/keys",
                                  {"name": "ci", "role": "viewer"})  # fmt: skip
        assert created.status_code == 200
        token = re.search(r'value="(keel_sk_[^"]+)"', created.text)
        assert token is not None
        listed = (await client.get("/ui/keys")).text
        assert token[1] not in listed
        key_id = token[1].removeprefix("keel_sk_").split("_")[0]
        revoked = await post_form(client, "/ui/keys", f"/ui/keys/{key_id}/revoke",
                                  {"confirm": "yes"})  # fmt: skip
        assert revoked.status_code == 303
        assert await console.services.keys.principal_of(key_id) is None
        user = await post_form(client, "/ui/users", "/ui/users",
                               {"name": "ada", "role": "viewer"})  # fmt: skip
        assert user.status_code == 303
        assert "ada" in (await client.get("/ui/users")).text
        project = await post_form(client, "/ui/projects", "/ui/projects", {"name": "team-b"})
        assert project.status_code == 303
        assert "team-b" in (await client.get("/ui/projects")).text


def blocked_trace(trace_id: str) -> Converted:
    """A stored request the guard blocked, as the gateway records one."""
    start_us = time.time_ns() // 1000
    row: dict[str, Any] = {
        "trace_id": trace_id, "project_id": "default", "key_id": None, "start_us": start_us,
        "duration_ms": 3.0, "ttft_ms": None, "operation": "chat", "model": "chat",
        "route": "chat", "target": None, "provider": None, "user": None, "session_id": None,
        "prompt_name": None, "prompt_version": None, "status": "error",
        "error_type": "guard_blocked", "http_status": 400, "attempts": 0, "input_tokens": None,
        "output_tokens": None, "cost": None, "metadata": {},
        "input": '[{"role":"user","content":"my card is [REDACTED_CARD]"}]', "output": None,
        "guard_action": "block", "guard_policy": "strict",
    }  # fmt: skip
    verdicts = [
        {
            "scanner": "pii",
            "score": 0.97,
            "action": "block",
            "latency_ms": 0.4,
            "findings": [{"kind": "credit_card", "detail": "1 match", "value_hash": "ab"}],
        }
    ]
    start_ns = start_us * 1000
    spans = [
        span(trace_id, "a" * 16, None, "chat chat", "server", start_ns, start_ns + 3_000_000,
             "error", {}),
        span(trace_id, "b" * 16, "a" * 16, "keel.guard.input", "internal", start_ns,
             start_ns + 1_000_000, "ok", {"keel.guard.verdicts": verdicts}),
    ]  # fmt: skip
    return Converted(row, orjson.dumps(spans).decode())


async def test_guard_events_show_scanner_score_and_redacted_content(console: Console) -> None:
    trace_id = "f" * 32
    console.services.tracing.store.write([blocked_trace(trace_id)])
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        page = (await client.get("/ui/guard?action=block")).text
        assert f"/ui/traces/{trace_id}" in page
        assert "pii" in page
        assert "0.97" in page
        assert "credit_card: 1 match" in page
        assert "[REDACTED_CARD]" in page
        assert f"/ui/traces/{trace_id}" not in (await client.get("/ui/guard?action=flag")).text
        detail = (await client.get(f"/ui/traces/{trace_id}")).text
        assert "credit_card" in detail
        assert "policy strict" in detail


async def test_bad_input_is_an_html_error_page_not_a_500(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["admin"])
        for path in ("/ui/traces?since=yesterday", "/ui/traces?cursor=%%%", "/ui/?range=9y",
                     "/ui/traces/" + "0" * 32, "/ui/prompts/nope", "/ui/traces?min_cost=-1",
                     "/ui/prompts/support/diff?from=1&to=99"):  # fmt: skip
            response = await client.get(path)
            assert 400 <= response.status_code < 500, (path, response.status_code)
            assert response.headers["content-type"].startswith("text/html")
            assert 'role="alert"' in response.text


async def test_pages_carry_security_headers(console: Console) -> None:
    async with console.client() as client:
        await login(client, console.keys["viewer"])
        response = await client.get("/ui/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
