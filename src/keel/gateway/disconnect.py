"""Noticing a client that leaves, so the upstream call it was waiting for stops too.

ASGI servers say so with an `http.disconnect` message from `receive()` (uvicorn sends it
as soon as the connection is lost); one watcher task per request waits for it, started
when the first upstream call does (a request refused or answered from the cache before
that costs none).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from keel.tracing.model import ClientDisconnected

Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class ClientWatch:
    """Whether the client left; code run inside `cancelling()` is cancelled when it does.

    Only the block inside `cancelling()` is cancelled (as `asyncio.timeout` does it), and
    the block then raises ClientDisconnected: the steps around it (recording the trace,
    settling limits) run to their end, never cut short half way.
    """

    __slots__ = ("_cancelled", "_receive", "_task", "_watcher", "gone")

    def __init__(self, receive: Receive):
        self.gone = False
        self._receive = receive
        self._task: asyncio.Task[Any] | None = None  # the task inside cancelling(), if any
        self._cancelled = False  # whether this watch cancelled it
        self._watcher: asyncio.Future[None] | None = None

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    def cancelling(self) -> ClientWatch:
        """`with watch.cancelling():` the block stops with ClientDisconnected if the client
        leaves (or has left already)."""
        return self

    def __enter__(self) -> None:
        if self.gone:
            raise ClientDisconnected()
        if self._watcher is None:
            # A client that left before now is reported at once: the block's first wait
            # is where it learns so.
            self._watcher = asyncio.ensure_future(self._watch(self._receive))
        self._task = asyncio.current_task()
        self._cancelled = False

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if not self._cancelled or task is None:
            return
        # Take back our own cancellation; one from elsewhere (shutdown) goes on as it was.
        if task.uncancel() == 0 and kind is asyncio.CancelledError:
            raise ClientDisconnected() from None

    def close(self) -> None:
        """Stop watching (the response is complete, or the request ends)."""
        if self._watcher is not None:
            self._watcher.cancel()
