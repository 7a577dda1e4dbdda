"""Simple scanners: invisible characters, banned substrings, custom regexes, length."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Literal

from keel.guard.base import Action, Finding, ScanContext, Stopwatch, Verdict, text_hash
from keel.guard.normalize import strip_invisible

RuleMode = Literal["block", "redact", "flag"]
_ACTIONS: dict[RuleMode, Action] = {"block": "block", "redact": "redact", "flag": "flag"}


def _replace_spans(text: str, spans: Sequence[tuple[int, int]], replacement: str) -> str:
    parts: list[str] = []
    at = 0
    for start, end in sorted(spans):
        if start < at:
            continue
        parts.extend((text[at:start], replacement))
        at = end
    parts.append(text[at:])
    return "".join(parts)


class InvisibleTextScanner:
    """Zero-width, bidi-control, Unicode tag and other non-rendering characters.

    `redact` returns the text without them; Unicode tag text (which can spell hidden
    instructions) is reported in the finding detail only as its length.
    """

    name = "invisible_text"

    def __init__(self, mode: RuleMode = "redact") -> None:
        self.mode = mode

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        clean, findings, hidden = strip_invisible(text)
        if hidden:
            findings.append(
                Finding(
                    kind="unicode_tag_text",
                    start=0,
                    end=len(text),
                    detail=f"{len(hidden)} hidden character(s)",
                    value_hash=text_hash(hidden),
                )
            )
        action: Action = _ACTIONS[self.mode] if findings else "allow"
        return Verdict(
            scanner=self.name,
            score=1.0 if findings else 0.0,
            action=action,
            findings=findings,
            redacted=clean if findings and self.mode == "redact" else None,
            latency_ms=watch.ms(),
        )


class BannedSubstringsScanner:
    """Blocks or redacts listed phrases; `whole_words` avoids "ass" in "class".

    Matching also runs on the NFKC, case-folded text, so full-width or styled letters
    do not slip past (those matches can block or flag but are not redacted in place).
    """

    name = "banned_substrings"

    def __init__(
        self,
        substrings: Sequence[str],
        *,
        case_sensitive: bool = False,
        whole_words: bool = True,
        mode: RuleMode = "block",
        replacement: str = "[REDACTED]",
    ) -> None:
        if not substrings:
            raise ValueError("banned_substrings needs at least one substring")
        flags = 0 if case_sensitive else re.IGNORECASE
        body = "|".join(re.escape(s) for s in sorted(substrings, key=len, reverse=True))
        pattern = rf"(?<!\w)(?:{body})(?!\w)" if whole_words else f"(?:{body})"
        self._pattern = re.compile(pattern, flags)
        self.mode = mode
        self.replacement = replacement

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        spans = [(m.start(), m.end()) for m in self._pattern.finditer(text)]
        findings = [
            Finding("banned_substring", s, e, value_hash=text_hash(text[s:e].lower()))
            for s, e in spans
        ]
        if not spans:
            folded = unicodedata.normalize("NFKC", strip_invisible(text)[0]).casefold()
            if self._pattern.search(folded):
                findings.append(
                    Finding("banned_substring", 0, len(text), detail="after normalisation")
                )
        action: Action = _ACTIONS[self.mode] if findings else "allow"
        redacted = None
        if findings and self.mode == "redact":
            if spans:
                redacted = _replace_spans(text, spans, self.replacement)
            else:
                action = "block"  # a styled match cannot be cut out of the original
        return Verdict(self.name, 1.0 if findings else 0.0, action, findings, redacted, watch.ms())


class RegexScanner:
    """Custom patterns (Python `re` syntax): block, flag, or redact the matches."""

    name = "regex"

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        mode: RuleMode = "block",
        replacement: str = "[REDACTED]",
        ignore_case: bool = False,
    ) -> None:
        if not patterns:
            raise ValueError("regex needs at least one pattern")
        flags = re.IGNORECASE if ignore_case else 0
        compiled: list[re.Pattern[str]] = []
        for p in patterns:
            try:
                compiled.append(re.compile(p, flags))
            except re.error as exc:
                raise ValueError(f"invalid regex {p!r}: {exc}") from exc
        self._patterns = compiled
        self.mode = mode
        self.replacement = replacement

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        findings = [
            Finding("regex", m.start(), m.end(), detail=f"pattern {i}", value_hash=text_hash(m[0]))
            for i, p in enumerate(self._patterns)
            for m in p.finditer(text)
            if m.end() > m.start()
        ]
        action: Action = _ACTIONS[self.mode] if findings else "allow"
        redacted = None
        if findings and self.mode == "redact":
            redacted = _replace_spans(text, [(f.start, f.end) for f in findings], self.replacement)
        return Verdict(self.name, 1.0 if findings else 0.0, action, findings, redacted, watch.ms())


class MaxLengthScanner:
    """Blocks text over `max_chars`, or (mode `truncate`) cuts it to that length."""

    name = "max_length"

    def __init__(self, max_chars: int, mode: Literal["block", "truncate", "flag"] = "block"):
        if max_chars <= 0:
            raise ValueError("max_length needs max_chars > 0")
        self.max_chars = max_chars
        self.mode = mode

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        if len(text) <= self.max_chars:
            return Verdict(self.name, 0.0, "allow", latency_ms=watch.ms())
        finding = Finding("too_long", self.max_chars, len(text), detail=f"{len(text)} chars")
        if self.mode == "truncate":
            return Verdict(self.name, 1.0, "redact", [finding], text[: self.max_chars], watch.ms())
        action: Action = "block" if self.mode == "block" else "flag"
        return Verdict(self.name, 1.0, action, [finding], latency_ms=watch.ms())
