"""/api/prompts: versions, labels, diffs, render previews and archiving of stored prompts.

Every lookup is inside the caller's project, so another project's prompt is a 404.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from keel.auth.keys import Principal
from keel.prompts.service import PromptService
from keel.prompts.spec import (
    LABEL_PATTERN,
    MAX_VERSION,
    NAME_PATTERN,
    PromptConfig,
    PromptContent,
    PromptMessage,
    VariableSpec,
)
from keel.server.deps import ServicesDep, require
from keel.server.openai.protocol import ErrorResponse
from keel.server.responses import json_response

router = APIRouter(prefix="/prompts", tags=["prompts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid input (the message names the param)"},
    404: {"model": ErrorResponse, "description": "No such prompt, version or label here"},
}

Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=100, description="Prompt name.")]
Label = Annotated[str, Path(pattern=LABEL_PATTERN, max_length=64, description="Label name.")]
VersionNumber = Annotated[int, Query(ge=1, le=MAX_VERSION, description="Version number.")]


def prompt_service(services: ServicesDep) -> PromptService:
    assert services.prompts is not None  # build_services always wires it
    return services.prompts


PromptsDep = Annotated[PromptService, Depends(prompt_service)]


# Bodies


class NewVersion(PromptContent):
    message: str = Field("", max_length=2000, description="Commit message: why this version.")

    @field_validator("message")
    @classmethod
    def _printable(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("the message contains a NUL character")
        return value

    def content(self) -> PromptContent:
        return PromptContent.model_validate(self.model_dump(exclude={"message"}))


class LabelMove(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, le=MAX_VERSION, description="Version the label points at.")


class RenderInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int | None = Field(None, ge=1, le=MAX_VERSION)
    label: str | None = Field(None, pattern=LABEL_PATTERN, max_length=64)
    variables: dict[str, Any] = Field(default_factory=dict)


# Responses


class PromptInfo(BaseModel):
    name: str
    latest_version: int
    labels: dict[str, int]
    created_at: str
    updated_at: str
    archived: bool
    archived_at: str | None


class PromptList(BaseModel):
    data: list[PromptInfo]


class VersionSummary(BaseModel):
    version: int
    labels: list[str]
    message: str
    author: str
    created_at: str


class VersionList(BaseModel):
    name: str
    data: list[VersionSummary]


class VersionDetail(VersionSummary):
    name: str
    messages: list[PromptMessage]
    variables: list[VariableSpec]
    allow_extra_variables: bool
    config: PromptConfig


class CreatedVersion(BaseModel):
    created: bool = Field(description="False when the content equals the newest version.")
    version: VersionDetail


class DiffResult(BaseModel):
    name: str
    from_version: int
    to_version: int
    diff: str = Field(description="Unified diff of messages, variables and config.")


class LabelResult(BaseModel):
    name: str
    label: str
    version: int
    previous_version: int | None


class RenderedMessage(BaseModel):
    role: str
    content: str


class RenderResult(BaseModel):
    name: str
    version: int
    messages: list[RenderedMessage]
    config: dict[str, Any]


@router.get("", summary="List prompts", response_model=PromptList, responses=_ERRORS)
async def list_prompts(
    prompts: PromptsDep,
    principal: Annotated[Principal, require("prompts:read")],
    include_archived: bool = False,
) -> Response:
    found = await asyncio.to_thread(
        prompts.list_prompts, principal.project_id, include_archived=include_archived
    )
    return json_response({"data": [p.as_dict() for p in found]})


@router.post(
    "/{name}/versions",
    summary="Create a version (no new version when the content equals the newest)",
    response_model=CreatedVersion,
    status_code=201,
    responses={**_ERRORS, 200: {"model": CreatedVersion, "description": "No changes"}},
)
async def create_version(
    name: Name,
    body: NewVersion,
    prompts: PromptsDep,
    principal: Annotated[Principal, require("prompts:write")],
) -> Response:
    record, created = await asyncio.to_thread(
        prompts.create_version,
        principal.project_id,
        name,
        body.content(),
        message=body.message,
        actor=principal,
    )
    return json_response(
        {"created": created, "version": record.as_dict()}, status=201 if created else 200
    )


@router.get(
    "/{name}/versions",
    summary="List a prompt's versions, newest first",
    response_model=VersionList,
    responses=_ERRORS,
)
async def list_versions(
    name: Name,
    prompts: PromptsDep,
    principal: Annotated[Principal, require("prompts:read")],
    content: Annotated[
        bool, Query(description="Include each version's messages, variables and config.")
    ] = False,
) -> Response:
    records = await asyncio.to_thread(prompts.list_versions, principal.project_id, name)
    rows = [r.as_dict() if content else r.summary() for r in records]
    return json_response({"name": name, "data": rows})


@router.get(
    "/{name}",
    summary="Get a version by number or label (default: the production label)",
    response_model=VersionDetail,
    responses=_ERRORS,
)
async def get_prompt(
    name: Name,
    prompts: PromptsDep,
    principal: Annotated[Principal, require("prompts:read")],
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    label: Annotated[str | None, Query(pattern=LABEL_PATTERN, max_length=64)] = None,
) -> Response:
    record = await asyncio.to_thread(
        prompts.get, principal.project_id, name, version=version, label=label
    )
    return json_response(record.as_dict())


@router.get(
    "/{name}/diff",
    summary="Unified diff between two versions",
    response_model=DiffResult,
    responses=_ERRORS,
)
async def diff_versions(
    name: Name,
    prompts: PromptsDep,
    principal: Annotated[Principal, require("prompts:read")],
    from_version: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=MAX_VERSION)],
) -> Response:
    text = await asyncio.to_thread(
        prompts.diff, principal.project_id, name, from_version, to_version
    )
    return json_response(
        {"name": name, "from_version": from_version, "to_version": to_version, "diff": text}
    )


@router.put(
    "/{name}/labels/{label}",
    summary="Point a label at a version (latest cannot be moved)",
    response_model=LabelResult,
    responses=_ERRORS,
)
async def set_label(
    name: Name,
    label: Label,
    body: LabelMove,
    prompts: PromptsDep,
    principal: Annotated[Principal, require("prompts:write")],
) -> Response:
    previous, version = await asyncio.to_thread(
        prompts.set_label, principal.project_id, name, label, body.version, actor=principal
    )
    return json_response(
        {"name": name, "label": label, "version": version, "previous_version": previous}
    )


@router.post(
    "/{name}/render",
    summary="Preview the messages a version renders to, with these variables",
    response_model=RenderResult,
    responses=_ERRORS,
)
async def render_prompt(
    name: Name,
    body: RenderInput,
    prompts: PromptsDep,
    principal: Annotated[Principal, require("prompts:read")],
) -> Response:
    record, messages = await asyncio.to_thread(
        prompts.render,
        principal.project_id,
        name,
        body.variables,
        version=body.version,
        label=body.label,
    )
    return json_response(
        {
            "name": name,
            "version": record.version,
            "messages": messages,
            "config": record.content.config.request_fields(),
        }
    )


@router.post(
    "/{name}/archive",
    summary="Archive a prompt: hidden from lists and the gateway until a new version",
    response_model=PromptInfo,
    responses=_ERRORS,
)
async def archive_prompt(
    name: Name, prompts: PromptsDep, principal: Annotated[Principal, require("prompts:write")]
) -> Response:
    summary = await asyncio.to_thread(prompts.archive, principal.project_id, name, actor=principal)
    return json_response(summary.as_dict())
