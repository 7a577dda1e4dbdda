"""Knowledge bases in the console: the project's bases, a base's documents and chunks, its
ingestion jobs, a search playground showing each hit's scores with its best-matching
sentence highlighted, and a question answered through the gateway with its citations."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from keel.calls import Call
from keel.errors import KeelError
from keel.gateway.answer import Answer
from keel.jobs.ingest import KIND as INGEST
from keel.server.admin.knowledge import knowledge_service
from keel.server.openai.files import job_system
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
        jobs=await _ingest_jobs(c, name), routes=c.services.router.table.names(project),
    )  # fmt: skip


async def _ingest_jobs(c: Console, name: str) -> list[dict[str, Any]]:
    """The base's latest ingestion jobs, with their progress (newest first)."""
    store = job_system(c.services).store
    jobs, _more = await db(lambda: store.page(c.principal.project_id, kind=INGEST, limit=50))
    return [
        {"job": job, "progress": job.progress()} for job in jobs if job.params.get("kb") == name
    ][:10]


@router.post("/kbs/{name}/ask")
async def ask(c: Annotated[Console, ui_require("inference")], name: Name) -> Response:
    """A question answered from the base through the gateway, with its citations."""
    form = await c.form()
    question = form.get("question", "").strip()[:2000]
    model = form.get("model", "")
    if not question or not model:
        raise UiError(400, "ask a question and pick a route to answer it")
    http_state = c.request.scope.get("state") or {}
    trace_id = str(http_state.get("trace_id", ""))
    wire = {"model": model, "messages": [{"role": "user", "content": question}],
            "max_tokens": 192, "kb": {"name": name, "top_k": 4}}  # fmt: skip
    call = Call("chat/completions", wire, c.principal, trace_id,
                started_ns=http_state.get("started_ns", 0))  # fmt: skip
    answer, error = None, None
    try:
        handled = await c.services.gateway.handle(call)  # not streamed: a whole Answer
        assert isinstance(handled, Answer)
        answer = handled.body
    except KeelError as exc:
        error = exc.message
    text = None
    if answer is not None:
        choices: Any = answer.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content")
    return page(
        c.request, "knowledge_answer.html", console=c, name=name, question=question,
        answer=text, citations=(answer or {}).get("citations", []), error=error,
        trace_id=trace_id, traced=c.services.tracing.enabled,
    )  # fmt: skip
