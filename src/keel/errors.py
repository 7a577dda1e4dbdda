"""Errors a client can cause or see, each mapped to an HTTP status and OpenAI error type.

KeelError                 500 api_error (never raised on purpose for client input)
├── InvalidRequest        400 invalid_request_error   (names the `param`)
│   └── GuardrailViolation 400 guardrail_violation   code=<scanner> (a guard policy blocked)
├── AuthenticationFailed  401 invalid_request_error   code=invalid_api_key
├── PermissionDenied      403 permission_error
├── NotFound              404 invalid_request_error   (e.g. code=model_not_found)
├── RequestTimeout        408 invalid_request_error   code=request_timeout (body too slow)
├── PayloadTooLarge       413 invalid_request_error   code=request_too_large
├── RateLimited           429 rate_limit_exceeded     (x-ratelimit-* and retry-after headers)
│   └── BudgetExceeded    429 budget_exceeded
├── UpstreamError         502 upstream_error          (bad or failed upstream answer)
├── UpstreamAuthError     502 upstream_auth_error     (the upstream refused Keel's credentials)
├── ServiceUnavailable    503 service_unavailable     (model server starting or down)
└── UpstreamTimeout       504 timeout
"""

from __future__ import annotations

from typing import Any


class KeelError(Exception):
    status = 500
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        # Seconds the upstream asked us to wait (its Retry-After header), for retry policies.
        self.retry_after = retry_after
        # Response headers that go with the error (rate-limit state, Retry-After).
        self.headers = headers

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(KeelError):
    status = 400
    type = "invalid_request_error"


class GuardrailViolation(InvalidRequest):
    """A guard policy blocked the request or the answer; `code` names the scanner.

    The message says which scanner and policy decided, never the text that was found.
    """

    type = "guardrail_violation"


class AuthenticationFailed(KeelError):
    status = 401
    type = "invalid_request_error"

    def __init__(self, message: str):
        super().__init__(message, code="invalid_api_key")


class PermissionDenied(KeelError):
    status = 403
    type = "permission_error"


class NotFound(KeelError):
    status = 404
    type = "invalid_request_error"


class RequestTimeout(KeelError):
    """The client did not send the whole request body in time; the connection is closed."""

    status = 408
    type = "invalid_request_error"

    def __init__(self, timeout: float, received: int, expected: int | None):
        of = f" of {expected}" if expected is not None else ""
        super().__init__(
            f"request body not complete after {timeout:g} s ({received}{of} bytes arrived); "
            "send the whole body without pausing, or raise the request_body_timeout setting "
            "(KEEL_REQUEST_BODY_TIMEOUT)",
            code="request_timeout",
            headers={"Connection": "close"},
        )


class PayloadTooLarge(KeelError):
    status = 413
    type = "invalid_request_error"

    def __init__(self, limit: int):
        super().__init__(
            f"request body is larger than {limit} bytes; send less, or raise the "
            "max_body_bytes setting (KEEL_MAX_BODY_BYTES)",
            code="request_too_large",
        )


class RateLimited(KeelError):
    status = 429
    type = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    type = "budget_exceeded"


class UpstreamError(KeelError):
    status = 502
    type = "upstream_error"


class UpstreamAuthError(KeelError):
    """The upstream answered 401/403: the API key Keel holds for it is wrong or lacks access.

    Not an UpstreamError, so nothing that retries failed upstreams retries it: the same
    credentials fail the same way every time.
    """

    status = 502
    type = "upstream_auth_error"


class ServiceUnavailable(KeelError):
    status = 503
    type = "service_unavailable"


class UpstreamTimeout(KeelError):
    status = 504
    type = "timeout"
