"""A streamed answer, guarded: text is released only after it has been scanned.

The guard holds back the last `holdback` characters of the stream (more if a finding or
a word would be cut), scans what it holds together with a look-behind of released text,
and stops the stream, releasing nothing more, when a scanner blocks. Anything shorter
than `holdback` that a scanner would block is therefore never sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keel.guard.anonymize import Deanonymizer, StreamingRestorer
from keel.guard.base import Verdict

if TYPE_CHECKING:
    from keel.guard.policy import Policy, RequestState


@dataclass
class StreamStep:
    text: str
    blocked: bool = False
    verdicts: list[Verdict] = field(default_factory=list)
    raw: str = ""  # the released text before placeholders are restored (for records)


class StreamingOutputGuard:
    def __init__(
        self,
        policy: Policy,
        state: RequestState,
        holdback: int = 128,
        lookbehind: int = 256,
        min_step: int = 32,
    ) -> None:
        self.policy = policy
        self.state = state
        self.holdback = holdback
        self.lookbehind = max(lookbehind, holdback)
        self.min_step = min_step
        self._released = ""  # the tail of already released text (before restoration)
        self._pending = ""
        self.blocked = False
        self._restorer: StreamingRestorer | None = (
            Deanonymizer(state.vault).stream() if policy.spec.deanonymize else None
        )

    @property
    def held(self) -> int:
        """Characters received but not yet released."""
        return len(self._pending) + (self._restorer.held if self._restorer else 0)

    def feed(self, chunk: str) -> StreamStep:
        """Add a chunk; returns the text that may be sent now (often empty)."""
        if self.blocked:
            return StreamStep("", blocked=True)
        self._pending += chunk
        if len(self._pending) < self.holdback + self.min_step:
            return StreamStep("")
        return self._advance(final=False)

    def finish(self) -> StreamStep:
        """The end of the stream: scan and release the rest (unless blocked)."""
        if self.blocked:
            return StreamStep("", blocked=True)
        step = self._advance(final=True)
        if not step.blocked and self._restorer is not None:
            step.text += self._restorer.flush()
        return step

    def _cut(self, verdicts: list[Verdict], offset: int) -> int:
        pending = self._pending
        cut = len(pending) - self.holdback
        # Never split a finding (a redaction must see all of it), nor, if avoidable, a word.
        for verdict in verdicts:
            for f in verdict.findings:
                start, end = f.start - offset, f.end - offset
                if start < cut < end:
                    cut = max(0, start)
        space = max(pending.rfind(" ", 0, cut), pending.rfind("\n", 0, cut))
        if space > 0:
            cut = space + 1
        return max(0, cut)

    def _advance(self, final: bool) -> StreamStep:
        tail = self._released[-self.lookbehind :]
        window = tail + self._pending
        _, verdicts, blocked = self.policy.scan_output_text(window, self.state)
        if blocked:
            self.blocked = True
            self._pending = ""
            return StreamStep("", blocked=True, verdicts=verdicts)
        cut = len(self._pending) if final else self._cut(verdicts, len(tail))
        segment, self._pending = self._pending[:cut], self._pending[cut:]
        self._released = (self._released + segment)[-self.lookbehind :]
        text = segment
        if segment and any(v.action == "redact" for v in verdicts):
            text, _, _ = self.policy.scan_output_text(segment, self.state)
        raw = text
        if self._restorer is not None:
            text = self._restorer.feed(text)
        return StreamStep(text, verdicts=verdicts, raw=raw)
