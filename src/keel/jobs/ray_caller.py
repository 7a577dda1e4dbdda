"""The Ray actor that runs job items: it posts each batch line or experiment item, with its
signed item token, to a Keel server's item route, which runs it through `Gateway.handle` as
the job's owner.

Imported on Ray's workers, so it imports nothing of Keel's beyond this file and httpx.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

# Ends the message of an item whose fate is unknown: it may have reached the upstream.
_NOT_RESENT = "the item may have reached the upstream, so it is not sent again; resubmit it"


class ItemCaller:
    """One Ray actor; many items in flight at once (an async actor with max_concurrency)."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def pid(self) -> int:
        return os.getpid()

    async def run(self, path: str, token: str, body: bytes) -> dict[str, Any]:
        """POST `body` to Keel's item route at `path`: {"ok": true, "result": …} or an
        ItemFailed as a dict (see ItemFailed.as_dict)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=10.0),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        url = f"{self.base_url}{path}"
        try:
            response = await self._client.post(
                url,
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
        except httpx.ConnectError as error:  # nothing was sent: another attempt is safe
            return _failed(
                "keel_unreachable",
                f"could not reach Keel at {self.base_url} from the Ray actor ({error}); "
                "check KEEL_RAY_CALLBACK_URL",
                retryable=True,
            )
        except httpx.HTTPError as error:
            return _failed(
                "interrupted", f"Keel at {self.base_url} did not answer ({error}); {_NOT_RESENT}"
            )
        if response.status_code != 200:
            return _failed(
                "item_refused",
                f"Keel's item route answered {response.status_code}: {response.text[:500]}",
            )
        answer: dict[str, Any] = response.json()
        return answer

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _failed(code: str, message: str, *, retryable: bool = False) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"code": code, "message": message},
        "retryable": retryable,
        "retry_after": None,
        "paced": False,
    }
