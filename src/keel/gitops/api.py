"""A thin async client of Keel's /api, for `keel apply` and the prompt commands.

Failures become ApiError with the server's own message, so the CLI can print it as is.
"""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """`message` is the server's own words; str() adds the method, path and status."""

    def __init__(self, text: str, status: int | None = None, message: str | None = None):
        super().__init__(text)
        self.status = status
        self.message = message or text


class KeelAPI:
    """Calls /api on one Keel with one key; `client` is injectable so tests need no socket."""

    def __init__(self, client: httpx.AsyncClient, key_source: str | None = None):
        """`key_source` says where the key came from, for the 401 message."""
        self._client = client
        self.key_source = key_source
        # Tells the server that `keel apply` makes these changes (the audit log says so).
        client.headers["X-Keel-Change-Source"] = "apply"

    @classmethod
    def connect(
        cls, base_url: str, key: str, timeout: float = 30, key_source: str | None = None
    ) -> KeelAPI:
        return cls(
            httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
            ),
            key_source,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """The JSON answer; None for a 404 when `missing_ok`; ApiError for other failures."""
        try:
            response = await self._client.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ApiError(
                f"cannot reach Keel at {self._client.base_url} ({exc.__class__.__name__}); "
                "is 'keel serve' running?"
            ) from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            if response.status_code == 401 and self.key_source:
                message = f"{message} (the key tried: {self.key_source})"
            raise ApiError(
                f"{method} {path}: {response.status_code}: {message}",
                response.status_code,
                message,
            )
        return response.json()
