"""Prompts: list, version history, side-by-side diff, label moves (confirmed), a YAML editor
with a render preview, and a playground that runs a version through the gateway."""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import ValidationError

from keel.calls import Call
from keel.errors import KeelError
from keel.gateway.answer import Answer
from keel.prompts.spec import DEFAULT_LABEL, LATEST, MAX_VERSION, NAME_PATTERN, PromptContent
from keel.server.openai.protocol import ChatCompletionRequest
from keel.ui.web import Console, UiError, UiRoute, db, page, redirect, ui_require

router = APIRouter(route_class=UiRoute)

Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=100)]
MAX_EDITOR_CHARS = 200_000
NEW_PROMPT = """\
messages:
  - role: system
    content: You are a helpful assistant for {{ product }}.
variables:
  - name: product
    type: string
config:
  temperature: 0.2
  max_tokens: 128
"""


def _service(c: Console) -> Any:
    assert c.services.prompts is not None  # build_services always wires it
    return c.services.prompts


def _yaml(text: str, what: str) -> Any:
    if len(text) > MAX_EDITOR_CHARS:
        raise UiError(413, f"the {what} is over {MAX_EDITOR_CHARS} characters")
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise UiError(400, f"the {what} is not valid YAML: {str(exc)[:300]}") from None


def parse_content(text: str) -> PromptContent:
    data = _yaml(text, "prompt")
    try:
        return PromptContent.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the prompt"
        raise UiError(400, f"invalid prompt at {where}: {first['msg']}") from None


def parse_variables(text: str) -> dict[str, Any]:
    data = _yaml(text, "sample variables") or {}
    if not isinstance(data, dict):
        raise UiError(400, "sample variables must be a mapping, e.g. product: Keel")
    return data


@router.get("/prompts")
async def prompts(
    c: Annotated[Console, ui_require("prompts:read")], archived: bool = False
) -> Response:
    found = await db(_service(c).list_prompts, c.principal.project_id, include_archived=archived)
    return page(c.request, "prompts.html", console=c, prompts=found, archived=archived)


@router.get("/prompts/{name}")
async def prompt(c: Annotated[Console, ui_require("prompts:read")], name: Name) -> Response:
    versions = await db(_service(c).list_versions, c.principal.project_id, name)
    labels: dict[str, int] = {}
    for record in versions:
        for label in record.labels:
            labels[label] = record.version
    movable = sorted({DEFAULT_LABEL, "staging", *labels} - {LATEST})
    routes = c.services.router.table.names(c.principal.project_id)
    return page(
        c.request, "prompt.html", console=c, name=name, versions=versions, labels=labels,
        movable=movable, routes=routes, default_label=DEFAULT_LABEL,
    )  # fmt: skip


def side_by_side(old: str, new: str) -> list[tuple[str, str, str]]:
    """Rows of (tag, old line, new line); tag is equal, replace, delete or insert."""
    a, b = old.splitlines(), new.splitlines()
    rows: list[tuple[str, str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        left, right = a[i1:i2], b[j1:j2]
        for k in range(max(len(left), len(right))):
            rows.append((tag, left[k] if k < len(left) else "", right[k] if k < len(right) else ""))
    return rows


@router.get("/prompts/{name}/diff")
async def diff(
    c: Annotated[Console, ui_require("prompts:read")],
    name: Name,
    from_version: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=MAX_VERSION)],
) -> Response:
    service = _service(c)
    old = await db(service.get, c.principal.project_id, name, version=from_version)
    new = await db(service.get, c.principal.project_id, name, version=to_version)
    rows = side_by_side(old.content.to_yaml(), new.content.to_yaml())
    return page(c.request, "prompt_diff.html", console=c, name=name, old=old, new=new, rows=rows)


@router.post("/prompts/{name}/labels")
async def move_label(c: Annotated[Console, ui_require("prompts:write")], name: Name) -> Response:
    form = await c.form()
    if form.get("confirm") != "yes":
        raise UiError(400, "tick the confirmation box to move a label")
    label = form.get("label", "").strip()
    try:
        version = int(form.get("version", ""))
    except ValueError:
        raise UiError(400, "choose the version the label should point at") from None
    await db(_service(c).set_label, c.principal.project_id, name, label, version,
             actor=c.principal)  # fmt: skip
    return redirect(f"/ui/prompts/{name}?moved={label}")


def _editor(
    c: Console, name: str, content: str, variables: str, message: str, status: int = 200,
    error: str | None = None, preview: list[dict[str, str]] | None = None,
) -> Response:  # fmt: skip
    return page(
        c.request, "prompt_edit.html", status, console=c, name=name, content=content,
        variables=variables, message=message, error=error, preview=preview,
    )  # fmt: skip


@router.get("/new-prompt")
async def new_prompt(
    c: Annotated[Console, ui_require("prompts:write")],
    name: Annotated[str, Query(pattern=NAME_PATTERN, max_length=100)],
) -> Response:
    return redirect(f"/ui/prompts/{name}/edit")


@router.get("/prompts/{name}/edit")
async def edit(
    c: Annotated[Console, ui_require("prompts:write")],
    name: Name,
    base: Annotated[int | None, Query(alias="from", ge=1, le=MAX_VERSION)] = None,
) -> Response:
    service = _service(c)
    content, variables = NEW_PROMPT, "product: Keel\n"
    existing = await db(service.pointers, c.principal.project_id, name)
    if existing is not None:
        version = base or existing.labels.get(LATEST)
        record = await db(service.get, c.principal.project_id, name, version=version)
        content = record.content.to_yaml()
        samples = {v.name: v.default if v.default is not None else f"<{v.name}>"
                   for v in record.content.variables}  # fmt: skip
        variables = yaml.safe_dump(samples, sort_keys=False) if samples else ""
    return _editor(c, name, content, variables, "")


@router.post("/prompts/{name}/preview")
async def preview(c: Annotated[Console, ui_require("prompts:read")], name: Name) -> Response:
    form = await c.form()
    text, variables = form.get("content", ""), form.get("variables", "")
    message = form.get("message", "")
    try:
        content = parse_content(text)
        values = parse_variables(variables)
        compiled = _service(c).sandbox.compile(content)
        rendered = await db(compiled.render, values)
    except (UiError, KeelError) as exc:
        return _editor(c, name, text, variables, message, 400, error=str(exc))
    return _editor(c, name, text, variables, message, preview=rendered)


@router.post("/prompts/{name}/versions")
async def create_version(
    c: Annotated[Console, ui_require("prompts:write")], name: Name
) -> Response:
    form = await c.form()
    text, variables = form.get("content", ""), form.get("variables", "")
    message = form.get("message", "")[:2000]
    try:
        content = parse_content(text)
        record, _created = await db(_service(c).create_version, c.principal.project_id, name,
                                    content, message=message, actor=c.principal)  # fmt: skip
    except (UiError, KeelError) as exc:
        return _editor(c, name, text, variables, message, 400, error=str(exc))
    return redirect(f"/ui/prompts/{name}?created={record.version}#v{record.version}")


@router.post("/prompts/{name}/playground")
async def playground(c: Annotated[Console, ui_require("inference")], name: Name) -> Response:
    form = await c.form()
    variables = parse_variables(form.get("variables", ""))
    ref: dict[str, Any] = {"name": name, "variables": variables}
    selector = form.get("version", "")
    if selector.isdigit():
        ref["version"] = int(selector)
    elif selector:
        ref["label"] = selector
    wire: dict[str, Any] = {"prompt": ref, "max_tokens": 128}
    if form.get("model"):
        wire["model"] = form["model"]
    if form.get("message", "").strip():
        wire["messages"] = [{"role": "user", "content": form["message"]}]
    try:
        body = ChatCompletionRequest.model_validate(wire)
    except ValidationError as exc:
        raise UiError(400, f"invalid playground request: {exc.errors()[0]['msg']}") from None
    wire = body.model_dump(exclude_unset=True)
    services, request = c.services, c.request
    http_state = request.scope.get("state") or {}
    trace_id = str(http_state.get("trace_id", ""))
    call = Call("chat/completions", wire, c.principal, trace_id,
                started_ns=http_state.get("started_ns", 0))  # fmt: skip
    answer: Answer | None = None
    error: str | None = None
    try:
        handled = await services.gateway.handle(call)  # not streamed: a whole Answer
        assert isinstance(handled, Answer)
        answer = handled
    except KeelError as exc:
        error = exc.message
    text, usage, headers = None, None, {}
    if answer is not None:
        choices: Any = answer.body.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content")
        usage, headers = answer.body.get("usage"), answer.headers
    return page(
        c.request, "playground.html", console=c, name=name, answer=text, error=error,
        keel_headers=headers, usage=usage, trace_id=trace_id, traced=services.tracing.enabled,
    )  # fmt: skip
