"""The Scanner protocol and the typed values scanners return.

A scanner looks at one text (a message, a document, a model's answer) and returns a
`Verdict`: a score, what it found, and the action it proposes. Scanners are synchronous
and CPU-bound; the gateway runs them on a worker thread.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from keel.guard.anonymize import Vault

Action = Literal["allow", "flag", "redact", "block"]
Role = Literal["system", "user", "assistant", "tool", "document"]
Direction = Literal["input", "output"]

# Later actions win when verdicts are combined: a block beats a redaction beats a flag.
ACTION_RANK: dict[Action, int] = {"allow": 0, "flag": 1, "redact": 2, "block": 3}


def text_hash(text: str) -> str:
    """A short, stable digest of a found value, so findings can be logged without it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a scanner found, at [start, end) of the scanned text.

    `detail` never holds the matched value itself when that value is sensitive (PII,
    secrets): it holds a description such as a rule name, and `value_hash` identifies
    the value without revealing it.
    """

    kind: str
    start: int
    end: int
    detail: str = ""
    value_hash: str = ""
    score: float = 1.0


@dataclass(frozen=True, slots=True)
class ScanContext:
    """Where the scanned text comes from, and state shared by one request's scans: the
    anonymization vault, and the system prompt and canary that output must not leak."""

    role: Role = "user"
    direction: Direction = "input"
    vault: Vault | None = None
    system_prompt: str | None = None
    canary: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    scanner: str
    score: float
    action: Action
    findings: list[Finding] = field(default_factory=list)
    redacted: str | None = None
    latency_ms: float = 0.0

    @property
    def blocked(self) -> bool:
        return self.action == "block"


class Scanner(Protocol):
    """Looks at one text and says what it found; never raises on odd input."""

    name: str

    def scan(self, text: str, context: ScanContext) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The action a scanner takes at a given score: `action` when score >= threshold."""

    threshold: float = 0.5
    action: Action = "block"

    def __call__(self, score: float) -> Action:
        return self.action if score >= self.threshold else "allow"


@dataclass(slots=True)
class Stopwatch:
    """Milliseconds since creation, for `Verdict.latency_ms`."""

    clock: Callable[[], float] = time.perf_counter
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def ms(self) -> float:
        return (self.clock() - self.started) * 1000.0
