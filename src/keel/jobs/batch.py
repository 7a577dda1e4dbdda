"""Batches: a JSONL file of requests run as a job, each line through `Gateway.handle` exactly
as a live call of the batch's owner, ending in output and error files keyed by custom_id.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from keel.auth.keys import Principal
from keel.calls import Call, CallOp
from keel.errors import BudgetExceeded, InvalidRequest, KeelError, NotFound, RateLimited
from keel.gateway.answer import Answer
from keel.gateway.pipeline import Gateway
from keel.jobs.executor import Finish, ItemFailed
from keel.jobs.model import Item, Job, NewFile
from keel.jobs.store import JobStore

KIND = "batch"
ENDPOINTS: dict[str, CallOp] = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
COMPLETION_WINDOWS = ("24h",)
# Worth another attempt: the key's limits (paced, not counted), a failing or slow upstream.
_RETRYABLE = {429, 500, 502, 503, 504}

_REVOKED = (
    "the key that created this batch is revoked or expired; create the batch again with a valid key"
)

BodyCheck = Callable[[CallOp, dict[str, Any]], str | None]  # the wire check: None or a message


@dataclass(frozen=True, slots=True)
class BatchLine:
    number: int  # 1-based, as an editor shows it
    custom_id: str
    url: str
    body: dict[str, Any]


def _line_error(number: int, problem: str, fix: str) -> InvalidRequest:
    return InvalidRequest(
        f"line {number}: {problem}; {fix}", param="file", code="invalid_batch_line"
    )


def parse_lines(content: bytes, *, max_line_bytes: int, check_body: BodyCheck) -> list[BatchLine]:
    """Every line of a batch input file checked; the first bad one is a 400 naming it."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            f"the file is not UTF-8 text (byte {error.start}); save it as UTF-8 JSONL",
            param="file",
            code="invalid_file",
        ) from None
    lines: list[BatchLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(raw.encode()) > max_line_bytes:
            raise _line_error(
                number,
                f"{len(raw.encode())} bytes, over the limit of {max_line_bytes} per line",
                "shorten the request or split it",
            )
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise _line_error(
                number, f"not valid JSON ({error})", "write one JSON object per line (JSONL)"
            ) from None
        if not isinstance(data, dict):
            raise _line_error(
                number,
                f"a JSON {type(data).__name__}, not an object",
                'write {"custom_id": …, "method": "POST", "url": …, "body": {…}}',
            )
        custom_id = data.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 200:
            raise _line_error(
                number,
                "custom_id is missing, empty, over 200 characters or not a string",
                "give each line a unique custom_id string",
            )
        if custom_id in seen:
            raise _line_error(
                number,
                f"custom_id '{custom_id}' is also on line {seen[custom_id]}",
                "make every custom_id unique: results are matched by it",
            )
        seen[custom_id] = number
        if data.get("method", "POST") != "POST":
            raise _line_error(
                number, f"method '{data.get('method')}' is not supported", 'use "method": "POST"'
            )
        url = data.get("url")
        if url not in ENDPOINTS:
            raise _line_error(
                number, f"url {url!r} is not a batch endpoint", f"use one of {', '.join(ENDPOINTS)}"
            )
        body = data.get("body")
        if not isinstance(body, dict):
            raise _line_error(
                number,
                "body is missing or not a JSON object",
                "put the request's JSON object in body",
            )
        if not isinstance(body.get("model"), str):
            raise _line_error(number, "body.model is missing", "name the model in body.model")
        if body.get("stream"):
            raise _line_error(
                number, "stream: true is not allowed in a batch", "remove stream from the body"
            )
        problem = check_body(ENDPOINTS[url], body)
        if problem is not None:
            raise _line_error(number, problem, "fix the body as the endpoint expects it")
        lines.append(BatchLine(number, custom_id, url, body))
    if not lines:
        raise InvalidRequest(
            "the file has no requests; write one JSON object per line",
            param="file",
            code="invalid_file",
        )
    return lines


def check_batch(lines: Iterable[BatchLine], endpoint: str, known_models: set[str]) -> None:
    """Lines fit the batch: all for its endpoint, every model one the key may call."""
    for line in lines:
        if line.url != endpoint:
            raise _line_error(
                line.number,
                f"url {line.url} differs from the batch's endpoint {endpoint}",
                "put one endpoint's requests in one file",
            )
        model = line.body["model"]
        if model not in known_models:
            known = ", ".join(sorted(known_models)[:10]) or "none"
            raise NotFound(
                f"line {line.number}: unknown model '{model}' (known: {known}); use one of "
                "them, or add it with 'keel models add'",
                param="model",
                code="model_not_found",
            )


def trace_id() -> str:
    """An id of the same shape the HTTP layer gives a request."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class BatchKind:
    """Runs one batch line through the gateway as the batch's owner, and writes the files."""

    name = KIND

    def __init__(
        self,
        gateway: Gateway,
        store: JobStore,
        principal_of: Callable[[str], Awaitable[Principal | None]],
    ):
        self.gateway = gateway
        self.store = store
        self.principal_of = principal_of

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        return await self.run_line(job.id, job.key_id, item.key, item.payload)

    async def run_line(
        self, job_id: str, key_id: str, custom_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """One line as a call of the key that made the batch (Ray actors reach this through
        the item route, with a token signed for the line)."""
        principal = await self.principal_of(key_id)
        if principal is None:
            raise ItemFailed(
                _http_error(
                    401,
                    "",
                    {
                        "error": {
                            "message": _REVOKED,
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    },
                )
            )
        request_id = trace_id()
        call = Call(
            ENDPOINTS[payload["url"]],
            payload["body"],
            principal,
            request_id,
            metadata={"batch_id": job_id, "custom_id": custom_id},
        )
        try:
            answer = await self.gateway.handle(call)
        except KeelError as error:
            paced = isinstance(error, RateLimited) and not isinstance(error, BudgetExceeded)
            raise ItemFailed(
                _http_error(error.status, request_id, error.envelope()),
                retryable=error.status in _RETRYABLE and not isinstance(error, BudgetExceeded),
                retry_after=error.retry_after,
                paced=paced,
            ) from None
        if not isinstance(answer, Answer):  # lines never stream (parse_lines refuses it)
            raise ItemFailed({"code": "stream", "message": "a batch line asked for a stream"})
        return {"status_code": 200, "request_id": request_id, "body": answer.body}

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        items = await asyncio.to_thread(self.store.items, job.id, ["done", "failed"])
        output = bytearray()
        errors = bytearray()
        outputs = failures = 0
        for item in items:
            line: dict[str, Any] = {
                "id": f"batch_req_{job.id[-12:]}{item.ordinal:08d}",
                "custom_id": item.key,
            }
            if item.state == "done":
                line.update(response=item.result, error=None)
                output += orjson.dumps(line) + b"\n"
                outputs += 1
                continue
            error = item.error or {}
            if "status_code" in error:
                line.update(response=error, error=None)
            else:
                line.update(
                    response=None,
                    error={"code": error.get("code", "error"), "message": error.get("message", "")},
                )
            errors += orjson.dumps(line) + b"\n"
            failures += 1
        files = []
        if outputs:
            files.append(
                NewFile(
                    "output_file_id",
                    "batch_output",
                    f"{job.id}_output.jsonl",
                    bytes(output),
                    outputs,
                )
            )
        if failures:
            files.append(
                NewFile(
                    "error_file_id",
                    "batch_output",
                    f"{job.id}_error.jsonl",
                    bytes(errors),
                    failures,
                )
            )
        return Finish(files=tuple(files))


def _http_error(status: int, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"status_code": status, "request_id": request_id, "body": body}
