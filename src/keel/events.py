"""Change events: how a control-plane write reaches every in-process cache (≤ 1 s).

One interface, `ChangeBus`; the in-process bus calls subscribers right after the change
commits. A Redis pub/sub bus for several replicas implements the same interface.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("keel.events")


@dataclass(frozen=True, slots=True)
class Change:
    """Something in `topic` (e.g. "prompts", "routes") changed; `key` names what."""

    topic: str
    key: str
    project_id: str = "default"


Handler = Callable[[Change], None]


class ChangeBus(Protocol):
    def publish(self, change: Change) -> None: ...

    def subscribe(self, topic: str, handler: Handler) -> None: ...


class LocalChangeBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, topic: str, handler: Handler) -> None:
        with self._lock:
            self._handlers[topic].append(handler)

    def publish(self, change: Change) -> None:
        with self._lock:
            handlers = list(self._handlers.get(change.topic, ()))
        for handler in handlers:
            try:
                handler(change)
            except Exception:  # one broken cache must not stop the others from refreshing
                log.exception("change handler for %s failed on %s", change.topic, change.key)
