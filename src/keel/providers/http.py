"""HTTP plumbing every provider adapter shares: one pooled aiohttp session per upstream,
and the mapping of transport failures and error statuses to Keel's errors.

aiohttp rather than httpx on this path: its client adds several times less overhead per
request, and the gateway's added latency is a feature (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Callable, Collection
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from keel.errors import (
    InvalidRequest,
    KeelError,
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # unreadable: behave as if the upstream had said nothing
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # HTTP dates are GMT even when they fail to say so
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


class UpstreamHTTP:
    """POSTs JSON to one upstream and turns every failure into a KeelError that says why."""

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
        error_message: Callable[[bytes], str],
        unreachable_hint: str = "is it running?",
        overloaded: Collection[int] = (429, 503),
    ):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._error_message = error_message
        self._hint = unreachable_hint
        self._overloaded = overloaded
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # one new connection per request

    def _new_session(self, *, force_close: bool = False) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=force_close)
        return aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._new_session()
        return self._session

    def _fresh_client(self) -> aiohttp.ClientSession:
        if self._fresh is None or self._fresh.closed:
            self._fresh = self._new_session(force_close=True)
        return self._fresh

    async def _send(self, path: str, data: bytes) -> aiohttp.ClientResponse:
        """POST on a pooled keep-alive connection. When the upstream had already closed it
        (it drops idle connections on its own timer, and the close can cross the request on
        the wire), nothing was answered: the request goes once more on a new connection.
        aiohttp retries this way only for idempotent methods, and a POST is not one."""
        url = f"{self.base_url}/{path}"
        try:
            return await self._client().post(url, data=data, headers=self._headers)
        except aiohttp.ClientConnectorError:
            raise  # nothing was sent: the upstream is down, not a stale connection
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return await self._fresh_client().post(url, data=data, headers=self._headers)

    async def post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """The open response (status < 400); the caller reads or streams, then releases it."""
        try:
            response = await self._send(path, orjson.dumps(body))
        except aiohttp.ClientConnectorError as exc:
            raise ServiceUnavailable(
                f"upstream '{self.name}' at {self.base_url} is not reachable "
                f"({exc.os_error.strerror or exc.__class__.__name__}); {self._hint}"
            ) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"upstream '{self.name}' did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream '{self.name}' failed: {exc.__class__.__name__}: {exc}"
            ) from exc
        if response.status >= 400:
            raw = await response.read()
            response.release()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise self.status_error(response.status, self._error_message(raw), retry_after)
        return response

    async def read_json(self, response: aiohttp.ClientResponse) -> Any:
        """Read a whole answer and parse it, mapping a broken or garbled body to a 502/504."""
        try:
            raw = await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"upstream '{self.name}' did not finish in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"upstream '{self.name}' broke off its answer") from exc
        finally:
            response.release()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream '{self.name}' answered with invalid JSON") from exc

    def status_error(
        self, status: int, message: str, retry_after: float | None = None
    ) -> KeelError:
        text = f"upstream '{self.name}' answered {status}: {message}"
        if status in (400, 413, 422):
            return InvalidRequest(text)
        if status in (401, 403):
            return UpstreamAuthError(f"{text}; check the API key Keel holds for '{self.name}'")
        if status in self._overloaded:
            return ServiceUnavailable(text, retry_after=retry_after)
        return UpstreamError(text)

    async def close(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()
        # Let aiohttp finish closing transports before the loop goes away.
        await asyncio.sleep(0)


MAX_EVENT_BYTES = 8 * 1024 * 1024  # one SSE line; beyond it an upstream is broken or hostile


class ResponseStream:
    """An open streamed upstream response; closing it drops the connection."""

    def __init__(self, provider: str, response: aiohttp.ClientResponse):
        self._provider = provider
        self._response = response
        self._pending = 0  # `data:` lines received and not yet handed out

    def buffered(self) -> bool:
        """True when the next event has arrived already, so reading it will not wait."""
        return self._pending > 0

    async def _data(self) -> AsyncGenerator[Any, None]:
        """The JSON of each SSE `data:` line until `[DONE]` or the end; transport failures
        become Keel errors, and the response is released when the events end.

        Reads whatever has arrived at once rather than line by line: the events of one read
        are counted in `_pending`, so the relay can send them to the client together.
        """
        buffer = bytearray()
        try:
            async for received in self._response.content.iter_any():
                buffer += received
                end = buffer.rfind(b"\n") if b"\n" in received else -1
                if end < 0:
                    if len(buffer) > MAX_EVENT_BYTES:
                        raise UpstreamError(
                            f"upstream '{self._provider}' sent a stream line over "
                            f"{MAX_EVENT_BYTES} bytes"
                        )
                    continue
                lines = bytes(buffer[:end]).split(b"\n")
                del buffer[: end + 1]
                events = _data_lines(lines)
                self._pending = len(events)
                for data in events:
                    self._pending -= 1
                    if data == b"[DONE]":
                        return
                    yield self._event(data)
            for data in _data_lines([bytes(buffer)]):  # a last line without its newline
                if data == b"[DONE]":
                    return
                yield self._event(data)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"upstream '{self._provider}' stopped sending") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream '{self._provider}' broke off the stream: {exc.__class__.__name__}"
            ) from exc
        finally:
            self._pending = 0
            self._response.release()

    def _event(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"upstream '{self._provider}' sent a stream event that is not JSON"
            ) from exc

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must tell the upstream to stop.
        if not self._response.closed:
            self._response.close()


def _data_lines(lines: list[bytes]) -> list[bytes]:
    """The payloads of SSE `data:` lines; "event:" and comment lines carry nothing the data
    lacks."""
    found = []
    for line in lines:
        line = line.strip()
        if line.startswith(b"data:"):
            found.append(line[5:].strip())
    return found
