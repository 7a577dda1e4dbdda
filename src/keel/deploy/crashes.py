"""Why a model server process ended, and how long its supervisor waits before the next start.

The policy is capped exponential backoff, forever: a server is never given up on. Too many
crashes in a short window mark it crashlooping, which only a passed self-test clears.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["starting", "serving"]


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts, and what counts as a crash loop."""

    backoff: float = 0.5  # before the first restart; doubles with each recent crash
    backoff_max: float = 10.0  # the cap, also the pace of retries while crashlooping
    crashloop_crashes: int = 5
    crashloop_window: float = 60.0


def exit_signal(exit_code: int | None) -> str | None:
    """The name of the signal that killed a process (asyncio reports it as -signum)."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def describe_exit(exit_code: int) -> str:
    name = exit_signal(exit_code)
    if name is not None:
        return f"killed by {name} (exit code {exit_code})"
    return f"exited with code {exit_code}"


@dataclass(frozen=True)
class Crash:
    """One process that ended without Keel asking, or that failed its start-up checks."""

    cause: str  # e.g. "killed by SIGSEGV (exit code -11) while starting"
    phase: Phase
    exit_code: int | None  # None: it never ran, or Keel stopped it after a failed self-test
    log_path: str
    log_tail: tuple[str, ...]
    at: float = field(default_factory=time.time)  # wall clock, for people reading /readyz

    @property
    def signal(self) -> str | None:
        return exit_signal(self.exit_code)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "phase": self.phase,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "at": self.at,
            "log_path": self.log_path,
            "log_tail": list(self.log_tail),
        }


class CrashHistory:
    """Crashes of one supervised server: the total, the last one, and the recent ones."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.total = 0
        self.last: Crash | None = None
        self.crashlooping = False
        self._clock = clock
        self._recent: deque[float] = deque()

    def record(self, crash: Crash) -> float:
        """Count a crash; return the seconds to wait before the next start."""
        now = self._clock()
        self.total += 1
        self.last = crash
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.policy.crashloop_window:
            self._recent.popleft()
        recent = len(self._recent)
        # Sticky until a start passes its self-test: slow retries at the cap may thin the
        # window below the threshold without the server being any healthier.
        self.crashlooping = self.crashlooping or recent >= self.policy.crashloop_crashes
        if self.crashlooping:
            return self.policy.backoff_max
        return min(self.policy.backoff * 2.0 ** (recent - 1), self.policy.backoff_max)

    def recovered(self) -> None:
        """A start passed its self-test: the server is no longer crashlooping."""
        self.crashlooping = False
