"""Untrusted content: where a text came from, and the parts of a user message that quote it.

An instruction the user types is a request; the same words inside a retrieved document, a
tool's output or an e-mail the user pasted are an attack on the model. `SOURCE_ROLES` maps
where content came from to the role it is scanned as, and `quoted_spans` finds the data a
user message quotes ("summarise this e-mail: ...", fenced blocks, "> " quotes), so the
injection scanner can read that part as a document.
"""

from __future__ import annotations

import re
from typing import Literal

from keel.guard.base import Role

Source = Literal["user", "retrieved", "document", "tool", "http", "quoted"]
SOURCE_ROLES: dict[str, Role] = {
    "user": "user",
    "retrieved": "document",
    "document": "document",
    "quoted": "document",
    "tool": "tool",
    "http": "tool",
}
UNTRUSTED_ROLES: tuple[Role, ...] = ("document", "tool")
MIN_SPAN_CHARS = 40
MAX_SPANS = 4

_FENCES = re.compile(
    r"```[^\n]*\n(.*?)(?:```|\Z)|\"\"\"(.*?)(?:\"\"\"|\Z)|'''(.*?)(?:'''|\Z)", re.S
)
_QUOTE_BLOCK = re.compile(r"(?:^[ \t]*>[^\n]*(?:\n|\Z))+", re.M)
_RULE_LINE = re.compile(r"^[ \t]*(?:-{3,}|={3,}|\*{3,}|_{3,}|#{3,}|~{3,})[ \t]*$", re.M)
# A request about data that follows it: "Summarise this e-mail:", "Translate the text below:".
_LEAD_IN = re.compile(
    r"\b(?:summari[sz]e|summary of|translate|proofread|paraphrase|rewrite|rephrase|correct|"
    r"classify|categori[sz]e|extract|analy[sz]e|review|explain|reply to|respond to|answer|"
    r"fix|check|tl;?dr|what does|read|evaluate|assess|grade|critique|improve|edit|format|"
    r"convert|shorten|simplify|sentiment of|tone of|key points|fact-check|moderate|"
    r"zusammenfass\w*|übersetz\w*|résum\w*|tradu\w*)\b[^\n:]{0,120}?:[ \t]*\n?",
    re.I,
)
_LABEL = re.compile(
    r"^[ \t]*(?:text|document|e-?mail|article|input|content|context|passage|message|page|"
    r"review|comment|post|transcript|snippet|data|web ?page|source)[ \t]*:[ \t]*",
    re.I | re.M,
)


def quoted_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of the parts of a user message that quote content rather than ask.

    Fenced or triple-quoted blocks, runs of `> ` lines, text between `---` rules, and
    what follows a lead-in such as "Summarise this e-mail:" or a `Text:` label. Spans
    shorter than MIN_SPAN_CHARS are left out; at most MAX_SPANS, longest first."""
    spans: list[tuple[int, int]] = []
    for m in _FENCES.finditer(text):
        group = next(g for g in (1, 2, 3) if m.group(g) is not None)
        spans.append((m.start(group), m.end(group)))
    for m in _QUOTE_BLOCK.finditer(text):
        spans.append((m.start(), m.end()))
    rules = list(_RULE_LINE.finditer(text))
    for i, rule in enumerate(rules):
        spans.append((rule.end(), rules[i + 1].start() if i + 1 < len(rules) else len(text)))
    lead = _LEAD_IN.search(text)
    if lead is not None and lead.start() < 300:
        spans.append((lead.end(), len(text)))
    for m in _LABEL.finditer(text):
        spans.append((m.end(), len(text)))
    kept = sorted(
        {(s, e) for s, e in spans if len(text[s:e].strip()) >= MIN_SPAN_CHARS},
        key=lambda span: span[0] - span[1],
    )
    return kept[:MAX_SPANS]
