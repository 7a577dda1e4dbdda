"""What `Gateway.handle` gives back: a whole answer, or an event stream to relay.

Both carry the response headers, rendered once from the call's state. Imports no step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from keel.gateway.disconnect import ClientWatch


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: the response body (the client's model name, usage) and headers."""

    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class EventStream:
    """Server-sent events, ready to relay (the upstream answered; nothing was sent yet).

    Iterating `events` to its end, or closing it, ends the call: the trace is recorded and
    limits settle then. `client` is the watch that notices a client leaving mid-stream.
    """

    events: AsyncIterator[bytes]
    headers: dict[str, str]
    client: ClientWatch | None = None
