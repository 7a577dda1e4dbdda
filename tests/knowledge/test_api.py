"""/api/kbs through HTTP (a hash embedder stands in for MiniLM: these test the API layer)."""

from __future__ import annotations

import json

import httpx

from tests.knowledge.samples import MARKDOWN, pdf_bytes

Gateway = tuple[httpx.AsyncClient, str]


async def test_create_upload_list_search_and_delete(gateway: Gateway) -> None:
    client, key = gateway
    auth = {"Authorization": f"Bearer {key}"}
    created = await client.post("/api/kbs", json={"name": "handbook"}, headers=auth)
    assert created.status_code == 201
    assert created.json()["embedding_model"] == "fake-embed"

    uploaded = await client.post(
        "/api/kbs/handbook/documents",
        params={"source": "handbook.md", "metadata": json.dumps({"team": "hr"})},
        content=MARKDOWN,
        headers=auth,
    )
    assert uploaded.status_code == 200, uploaded.text
    [result] = uploaded.json()["data"]
    assert (result["status"], result["version"]) == ("created", 1)
    again = await client.post(
        "/api/kbs/handbook/documents", params={"source": "handbook.md"}, content=MARKDOWN,
        headers=auth,
    )  # fmt: skip
    assert again.json()["data"][0]["status"] == "unchanged"

    listed = (await client.get("/api/kbs", headers=auth)).json()["data"]
    assert [(kb["name"], kb["documents"]) for kb in listed] == [("handbook", 1)]
    documents = (await client.get("/api/kbs/handbook/documents", headers=auth)).json()
    assert documents["data"][0]["metadata"]["team"] == "hr"
    doc_id = documents["data"][0]["id"]
    chunks = await client.get(f"/api/kbs/handbook/documents/{doc_id}/chunks", headers=auth)
    assert any("28 days" in c["text"] for c in chunks.json()["data"])

    found = await client.post(
        "/api/kbs/handbook/search",
        json={"query": "paid holiday days", "top_k": 3, "mode": "lexical"},
        headers=auth,
    )
    assert found.status_code == 200
    top = found.json()["data"][0]
    assert top["source"] == "handbook.md"
    assert "28 days" in MARKDOWN.decode()[top["highlight_start"] : top["highlight_end"]]

    deleted = await client.delete(f"/api/kbs/handbook/documents/{doc_id}", headers=auth)
    assert deleted.status_code == 204
    assert (await client.delete("/api/kbs/handbook", headers=auth)).status_code == 204
    assert (await client.get("/api/kbs", headers=auth)).json()["data"] == []
    actions = [e["action"] for e in (await client.get("/api/audit", headers=auth)).json()["data"]]
    assert {"kb.create", "kb.ingest", "kb.document.delete", "kb.delete"} <= set(actions)


async def test_bad_input_is_a_4xx_naming_the_cause_and_stores_nothing(gateway: Gateway) -> None:
    client, key = gateway
    auth = {"Authorization": f"Bearer {key}"}
    await client.post("/api/kbs", json={"name": "docs"}, headers=auth)

    async def upload(source: str, data: bytes) -> httpx.Response:
        return await client.post(
            "/api/kbs/docs/documents", params={"source": source}, content=data, headers=auth
        )

    cases = [
        (await upload("empty.txt", b""), 400, "empty"),
        (await upload("deck.pptx", b"PK\x03\x04data"), 400, "unsupported document type"),
        (await upload("fake.pdf", b"<html>hello</html>"), 400, "not a PDF"),
        (await upload("fake.docx", b"plain text"), 400, "not a .docx"),
        (
            await client.post(
                "/api/kbs/nope/documents", params={"source": "a.txt"}, content=b"text", headers=auth
            ),
            404,
            "unknown knowledge base 'nope'",
        ),
        (
            await client.post(
                "/api/kbs/docs/search", json={"query": "x", "mode": "fuzzy"}, headers=auth
            ),
            400,
            "mode",
        ),
        (
            await client.post(
                "/api/kbs/docs/search",
                json={"query": "x", "filters": {"team": {"$regex": "a"}}},
                headers=auth,
            ),
            400,
            "operators are $in and $prefix",
        ),
        (await client.post("/api/kbs", json={"name": "docs"}, headers=auth), 400, "already"),
        (await client.post("/api/kbs", json={"name": "bad name!"}, headers=auth), 400, "name"),
    ]
    for response, status, cause in cases:
        assert response.status_code == status, (cause, response.text)
        assert cause in response.json()["error"]["message"], response.text
    listed = (await client.get("/api/kbs/docs", headers=auth)).json()
    assert (listed["documents"], listed["chunks"]) == (0, 0)


async def test_an_upload_over_the_body_limit_is_refused_before_it_is_read(
    gateway: Gateway,
) -> None:
    client, key = gateway
    auth = {"Authorization": f"Bearer {key}"}
    await client.post("/api/kbs", json={"name": "docs"}, headers=auth)
    huge = {**auth, "Content-Length": str(500 * 1024 * 1024)}
    response = await client.post(
        "/api/kbs/docs/documents", params={"source": "big.pdf"}, content=b"%PDF-", headers=huge
    )
    assert response.status_code == 413


async def test_a_viewer_may_search_but_not_ingest(gateway: Gateway) -> None:
    client, key = gateway
    services = client._transport.app.state.services  # type: ignore[attr-defined]
    project = services.keys.ensure_project()
    viewer = services.keys.create_key(project_id=project, role="viewer", name="v")[1]
    await client.post("/api/kbs", json={"name": "docs"}, headers={"Authorization": f"Bearer {key}"})
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    refused = await client.post(
        "/api/kbs/docs/documents", params={"source": "a.pdf"}, content=pdf_bytes(["x"]),
        headers=as_viewer,
    )  # fmt: skip
    assert refused.status_code == 403
    allowed = await client.post("/api/kbs/docs/search", json={"query": "x"}, headers=as_viewer)
    assert allowed.status_code == 200


async def test_chunking_and_the_document_weight_are_set_at_creation(gateway: Gateway) -> None:
    client, key = gateway
    auth = {"Authorization": f"Bearer {key}"}
    default = (await client.post("/api/kbs", json={"name": "plain"}, headers=auth)).json()
    assert (default["config"]["chunk_tokens"], default["config"]["overlap_tokens"]) == (200, 40)
    assert default["config"]["fusion"]["document_weight"] == 0
    chosen = await client.post(
        "/api/kbs",
        json={"name": "wide", "chunk_tokens": 300, "fusion": {"document_weight": 0.5}},
        headers=auth,
    )
    assert chosen.status_code == 201, chosen.text
    config = (await client.get("/api/kbs/wide", headers=auth)).json()["config"]
    assert (config["chunk_tokens"], config["fusion"]["document_weight"]) == (300, 0.5)
    refused = await client.post(
        "/api/kbs", json={"name": "bad", "fusion": {"document_weight": 2}}, headers=auth
    )
    assert refused.status_code == 400, refused.text
    assert "document_weight" in refused.json()["error"]["message"]
