"""/api/guard: a project's guard policies, where they apply, and a scan to try one out.

Writing policies and attachments takes `guard:write` (admins): who may weaken the guard
is a security decision. Built-in policies (default, strict) and those of the settings
are listed with `builtin: true` and cannot be replaced.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from keel.auth.keys import Principal
from keel.errors import InvalidRequest
from keel.guard.policy import PolicyError, PolicySpec
from keel.guard.service import GuardService
from keel.server.deps import ServicesDep, require
from keel.server.openai.protocol import ErrorResponse
from keel.server.responses import json_response

router = APIRouter(prefix="/guard", tags=["guard"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid input (the message names the param)"},
    404: {"model": ErrorResponse, "description": "No such policy here"},
}
Name = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Policy name."),
]


def guard_service(services: ServicesDep) -> GuardService:
    assert services.guard is not None  # build_services always wires it
    return services.guard


GuardDep = Annotated[GuardService, Depends(guard_service)]


class PolicyBody(PolicySpec):
    """A policy spec; `name` comes from the path."""

    name: str = Field("", max_length=100, description="Ignored: the path names the policy.")


class PolicyInfo(BaseModel):
    name: str
    builtin: bool
    spec: dict[str, Any]
    updated_at: str | None


class PolicyList(BaseModel):
    data: list[PolicyInfo]


class AttachmentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["project", "route", "key"]
    target: str | None = Field(
        None, max_length=200, description="Route name or key id; none for the project."
    )
    policy: str | None = Field(
        None, max_length=100, description="Policy name ('none': no guard); null detaches."
    )


class AttachmentInfo(BaseModel):
    scope: Literal["project", "route", "key"]
    target: str | None
    policy: str | None


class AttachmentList(BaseModel):
    data: list[AttachmentInfo]


class ScanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field("default", max_length=100, description="Policy to run.")
    text: str = Field(max_length=200_000, description="Text to scan.")
    direction: Literal["input", "output"] = "input"
    role: Literal["system", "user", "assistant", "tool", "document"] = "user"


class FindingInfo(BaseModel):
    kind: str
    start: int
    end: int
    detail: str


class VerdictInfo(BaseModel):
    scanner: str
    score: float
    action: str
    latency_ms: float
    findings: list[FindingInfo]


class ScanResult(BaseModel):
    policy: str
    blocked: bool
    action: str
    text: str = Field(description="The text as it would go on (redacted or anonymized).")
    verdicts: list[VerdictInfo]


@router.get("/policies", summary="List guard policies", response_model=PolicyList)
async def list_policies(
    guard: GuardDep, principal: Annotated[Principal, require("guard:read")]
) -> Response:
    found = await asyncio.to_thread(guard.list_policies, principal.project_id)
    return json_response({"data": found})


@router.get(
    "/policies/{name}", summary="Get a guard policy", response_model=PolicyInfo, responses=_ERRORS
)
async def get_policy(
    name: Name, guard: GuardDep, principal: Annotated[Principal, require("guard:read")]
) -> Response:
    return json_response(await asyncio.to_thread(guard.get_policy, principal.project_id, name))


@router.put(
    "/policies/{name}",
    summary="Create or replace a custom guard policy",
    response_model=PolicyInfo,
    responses=_ERRORS,
)
async def put_policy(
    name: Name,
    body: PolicyBody,
    guard: GuardDep,
    principal: Annotated[Principal, require("guard:write")],
) -> Response:
    spec = body.model_dump(exclude={"name"}, exclude_defaults=True)
    saved = await asyncio.to_thread(
        guard.put_policy, principal.project_id, name, spec, actor=principal
    )
    return json_response(saved)


@router.delete(
    "/policies/{name}", summary="Delete a custom guard policy", status_code=204, responses=_ERRORS
)
async def delete_policy(
    name: Name, guard: GuardDep, principal: Annotated[Principal, require("guard:write")]
) -> Response:
    await asyncio.to_thread(guard.delete_policy, principal.project_id, name, actor=principal)
    return Response(status_code=204)


@router.get("/attachments", summary="Where guard policies apply", response_model=AttachmentList)
async def list_attachments(
    guard: GuardDep, principal: Annotated[Principal, require("guard:read")]
) -> Response:
    found = await asyncio.to_thread(guard.list_attachments, principal.project_id)
    return json_response({"data": found})


@router.put(
    "/attachments",
    summary="Attach a policy to the project, a route or a key (policy null: detach)",
    response_model=AttachmentInfo,
    responses=_ERRORS,
)
async def put_attachment(
    body: AttachmentBody,
    guard: GuardDep,
    principal: Annotated[Principal, require("guard:write")],
) -> Response:
    saved = await asyncio.to_thread(
        guard.attach,
        principal.project_id,
        body.scope,
        body.target,
        body.policy,
        actor=principal,
    )
    return json_response(saved)


@router.post(
    "/scan",
    summary="Run a policy over a text and show every verdict (nothing is sent anywhere)",
    response_model=ScanResult,
    responses=_ERRORS,
)
async def scan(
    body: ScanBody, guard: GuardDep, principal: Annotated[Principal, require("guard:read")]
) -> Response:
    try:
        policy = await guard.policy_for(principal, "", {"x-keel-guard-policy": body.policy})
    except PolicyError as exc:
        raise InvalidRequest(str(exc)[:2000], param="policy") from exc
    if policy is None:
        return json_response(
            {
                "policy": body.policy,
                "blocked": False,
                "action": "allow",
                "text": body.text,
                "verdicts": [],
            }
        )
    if body.direction == "input":
        message = {"role": body.role, "content": body.text}
        result = await asyncio.to_thread(policy.run_input, [message])
        text = result.messages[0]["content"] if result.messages else ""
    else:
        result = await asyncio.to_thread(policy.run_output, body.text)
        text = result.text
    verdicts = [
        {
            "scanner": v.scanner,
            "score": v.score,
            "action": v.action,
            "latency_ms": v.latency_ms,
            "findings": [
                {"kind": f.kind, "start": f.start, "end": f.end, "detail": f.detail}
                for f in v.findings
            ],
        }
        for v in result.verdicts
    ]
    return json_response(
        {
            "policy": policy.name,
            "blocked": result.blocked,
            "action": result.action,
            "text": text,
            "verdicts": verdicts,
        }
    )
