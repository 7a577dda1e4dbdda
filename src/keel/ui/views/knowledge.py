"""Knowledge bases in the console: the project's bases, a base's documents and chunks, and a
search playground showing each hit's scores with its best-matching sentence highlighted."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from keel.errors import KeelError
from keel.server.admin.knowledge import knowledge_service
from keel.ui.web import Console, UiError, UiRoute, db, page, ui_require

router = APIRouter(route_class=UiRoute)

Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


@router.get("/kbs")
async def bases(c: Annotated[Console, ui_require("kb:read")]) -> Response:
    kbs = knowledge_service(c.services)
    found = await db(kbs.list_bases, c.principal.project_id)
    return page(c.request, "knowledge.html", console=c, bases=found)


@router.get("/kbs/{name}")
async def base(
    c: Annotated[Console, ui_require("kb:read")],
    name: Name,
    q: Annotated[str, Query(max_length=2000)] = "",
    mode: Annotated[Literal["hybrid", "dense", "lexical"], Query()] = "hybrid",
    document: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    kbs = knowledge_service(c.services)
    project = c.principal.project_id
    try:
        info = await db(kbs.get, project, name)
        documents, more = await db(kbs.documents, project, name, limit=200)
        chunks = await db(kbs.chunks, project, name, document) if document else []
        hits = await kbs.search(project, name, q, 10, None, mode) if q.strip() else []
    except KeelError as exc:
        raise UiError(exc.status, exc.message) from None
    shown = []
    for hit in hits:
        lead, tail = hit.highlight_start - hit.start, hit.highlight_end - hit.start
        shown.append(
            {"hit": hit, "before": hit.text[:lead], "mark": hit.text[lead:tail],
             "after": hit.text[tail:]}
        )  # fmt: skip
    return page(
        c.request, "knowledge_base.html", console=c, kb=info, documents=documents, more=more,
        chunks=chunks, document=document, q=q, mode=mode, hits=shown,
    )  # fmt: skip
