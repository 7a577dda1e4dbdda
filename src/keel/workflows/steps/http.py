"""The http step (and agents' HTTP tools): a JSON request to a URL template, secrets in
headers by `{$env: NAME}` reference, input and output checked by JSON Schema, a timeout,
retries of failed connections and 5xx, and an idempotency key that is the same on every
attempt and after a resume, so the tool can recognise a request it already served."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from keel.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from keel.workflows.compiled import CompiledStep, Validator
from keel.workflows.engine import Result, RunState
from keel.workflows.runtime import Runtime
from keel.workflows.spec import HttpStep

_RETRY_STATUS = {429, 500, 502, 503, 504}


def secret_headers(spec: HttpStep, environ: Mapping[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in spec.headers.items():
        if isinstance(value, dict):
            variable = value.get("$env")
            if variable is None or set(value) != {"$env"}:
                raise InvalidRequest(f"header {name}: write secrets as {{$env: NAME}}")
            if variable not in environ:
                raise InvalidRequest(
                    f"header {name}: environment variable {variable} is not set on the server; "
                    "set it where keel serve runs"
                )
            headers[name] = environ[variable]
    return headers


async def send(
    runtime: Runtime,
    spec: HttpStep,
    url: str,
    headers: dict[str, str],
    body: Any,
    idempotency_key: str,
    output: Validator | None,
) -> Any:
    """The tool's JSON answer, after retries; a clear error when it is not JSON."""
    headers = {**headers, spec.idempotency_header: idempotency_key}
    content = orjson.dumps(body) if body is not None and spec.method != "GET" else None
    if content is not None:
        headers["Content-Type"] = "application/json"
    attempt = 0
    while True:
        attempt += 1
        try:
            response = await runtime.http.request(
                spec.method, url, content=content, headers=headers, timeout=spec.timeout
            )
        except httpx.TimeoutException:
            if attempt <= spec.retries:
                await asyncio.sleep(min(0.1 * 2**attempt, 2))
                continue
            raise UpstreamTimeout(
                f"{spec.method} {url} took longer than {spec.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            if attempt <= spec.retries:
                await asyncio.sleep(min(0.1 * 2**attempt, 2))
                continue
            raise UpstreamError(f"{spec.method} {url} failed: {type(exc).__name__}") from None
        if response.status_code in _RETRY_STATUS and attempt <= spec.retries:
            await asyncio.sleep(min(0.1 * 2**attempt, 2))
            continue
        if response.status_code >= 400:
            raise UpstreamError(
                f"{spec.method} {url} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            answer = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            kind = response.headers.get("content-type", "no content type")
            raise UpstreamError(
                f"{spec.method} {url} answered {kind}, not JSON ({response.text[:60]!r}); "
                "an http tool must answer JSON"
            ) from None
        if output is not None:
            problem = output.problem(answer)
            if problem is not None:
                raise UpstreamError(
                    f"{spec.method} {url} answered JSON that does not match output_schema {problem}"
                )
        return answer


class HttpCall:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._inputs: dict[int, Validator] = {}

    async def __call__(
        self, step: CompiledStep, scope: dict[str, Any], run: RunState, key: str
    ) -> Result:
        spec: HttpStep = step.spec.body
        url = str(step.values["url"](scope))
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"url {url[:100]!r} is not an http(s) URL")
        body = step.values["body"](scope)
        if spec.input_schema is not None:
            validator = self._inputs.get(id(spec))
            if validator is None:
                validator = self._inputs[id(spec)] = Validator(spec.input_schema)
            validator.check(body, f"step {key}'s request body", param=key)
        headers = {**step.values["headers"](scope), **secret_headers(spec, self.runtime.environ)}
        answer = await send(
            self.runtime, spec, url, headers, body, f"{run.run_id}:{key}", step.output
        )
        return Result(answer, input={"url": url, "body": body})
