"""The HTTP/1.1 protocol `keel serve` runs: uvicorn's httptools one, plus a deadline for
request headers, which uvicorn does not have.

Without it a client that connects and sends nothing, or sends headers a byte at a time,
holds a connection (and a file descriptor) for as long as it likes. Bodies have their own
deadline in server/middleware.py, where a late body can still get a 408 in Keel's envelope.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderDeadline(HttpToolsProtocol):
    """Closes the connection when a request's headers are not whole `header_timeout` s after
    the connection opened or the previous answer ended."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A request already parsed and queued behind this one needs no deadline: it is in.
        waiting = bool(self.pipeline)
        super().on_response_complete()
        if not waiting and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (`Config(http=…)`), with this header deadline."""

    class KeelHttpProtocol(HeaderDeadline):
        pass

    KeelHttpProtocol.header_timeout = header_timeout
    return KeelHttpProtocol
