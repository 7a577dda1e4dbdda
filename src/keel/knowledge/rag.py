"""Retrieval-augmented answers: what a chat request asks for (`KnowledgeRequest`), the
numbered context put before its question, and the citations the answer carries.

The context template (documented in docs/knowledge.md) numbers each passage `[n]` with
its document and section, and asks the model to cite those numbers; the structured
citations list says which chunk each number is, so a client never parses the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidRequest
from keel.knowledge.index import check_filters
from keel.knowledge.rerank import RERANKERS
from keel.knowledge.service import MAX_TOP_K, Mode, SearchHit, check_name

DEFAULT_TOP_K = 4
MAX_BASES = 8
INSTRUCTIONS = (
    "Answer the user's question using only the numbered sources below. After each "
    "statement, cite the sources it comes from by number in square brackets, like [1]. "
    "If the sources do not contain the answer, say that you do not know."
)
_MARKER = re.compile(r"\[(\d{1,3})\]")
_FIELDS = {"name", "names", "top_k", "mode", "filters", "rerank", "groundedness"}
GROUNDEDNESS = ("background", "wait", "block")


@dataclass(frozen=True)
class KnowledgeRequest:
    """The `kb` field of a chat request: which bases to search, how many passages."""

    bases: tuple[str, ...]
    top_k: int = DEFAULT_TOP_K
    mode: Mode = "hybrid"
    filters: dict[str, Any] | None = None
    rerank: str | None = None
    groundedness: str = "background"  # or wait (score before answering), block (refuse)


def _bad(message: str, param: str = "kb") -> InvalidRequest:
    return InvalidRequest(
        f'{message}; send kb as {{"name": "handbook", "top_k": 4}} '
        '(or "names": [...] for several bases)',
        param=param,
        code="invalid_kb",
    )


def parse_request(raw: Any) -> KnowledgeRequest:
    """The request's `kb` field, checked: a base name (or names) and search options."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise _bad("kb must be an object or a base name")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        known = ", ".join(sorted(_FIELDS))
        raise _bad(f"unknown kb field(s) {', '.join(unknown)} (known: {known})")
    names = raw.get("names")
    if "name" in raw and names is not None:
        raise _bad("send kb.name or kb.names, not both")
    if names is None:
        names = [raw["name"]] if "name" in raw else []
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _bad("kb names no knowledge base", "kb.name")
    if len(names) > MAX_BASES:
        raise _bad(f"kb names at most {MAX_BASES} bases (got {len(names)})", "kb.names")
    for name in names:
        check_name(name, "kb.name")
    top_k = raw.get("top_k", DEFAULT_TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise _bad(f"kb.top_k must be a whole number from 1 to {MAX_TOP_K}", "kb.top_k")
    mode = raw.get("mode", "hybrid")
    if mode not in ("dense", "lexical", "hybrid"):
        raise _bad("kb.mode is one of dense, lexical, hybrid", "kb.mode")
    filters = raw.get("filters")
    if filters is not None:
        if not isinstance(filters, dict):
            raise _bad("kb.filters must be an object of metadata field: value", "kb.filters")
        try:
            check_filters(filters)
        except ValueError as exc:
            raise _bad(str(exc), "kb.filters") from exc
    rerank = raw.get("rerank")
    if rerank is not None and rerank not in RERANKERS:
        raise _bad(f"kb.rerank is one of {', '.join(sorted(RERANKERS))}", "kb.rerank")
    grounding = raw.get("groundedness", "background")
    if grounding not in GROUNDEDNESS:
        raise _bad(f"kb.groundedness is one of {', '.join(GROUNDEDNESS)}", "kb.groundedness")
    bases = tuple(dict.fromkeys(names))
    return KnowledgeRequest(bases, top_k, mode, filters, rerank, grounding)


def question(messages: Any) -> str:
    """The text retrieval searches for: the last user message (its text parts joined)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content.strip()
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if isinstance(p, dict)]
            return " ".join(str(p) for p in parts if p).strip()
    return ""


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk as the answer cites it: `[number]`."""

    number: int
    kb: str
    hit: SearchHit

    @property
    def title(self) -> str:
        title = self.hit.metadata.get("title")
        return str(title) if title else self.hit.source

    def label(self) -> str:
        section = " > ".join(self.hit.heading_path)
        return f"{self.title} ({section})" if section and section != self.title else self.title

    def citation(self) -> dict[str, Any]:
        hit = self.hit
        return {
            "index": self.number,
            "kb": self.kb,
            "chunk_id": hit.chunk_id,
            "document_id": hit.document_id,
            "source": hit.source,
            "title": self.title,
            "heading_path": list(hit.heading_path),
            "start": hit.start,
            "end": hit.end,
            "score": hit.score,
        }


def merge(found: list[tuple[str, list[SearchHit]]], top_k: int) -> list[Passage]:
    """The best `top_k` hits over every base searched, numbered from 1, best first."""
    ranked = sorted(
        ((kb, hit) for kb, hits in found for hit in hits), key=lambda pair: -pair[1].score
    )
    return [Passage(n, kb, hit) for n, (kb, hit) in enumerate(ranked[:top_k], start=1)]


def sources(passages: list[Passage]) -> str:
    """The numbered passages, as the documented template lays them out."""
    if not passages:
        return "Sources: none were found for this question."
    blocks = [f"[{p.number}] {p.label()}\n{p.hit.text.strip()}" for p in passages]
    return "Sources:\n\n" + "\n\n".join(blocks)


# The retrieved text travels as a message of this role from retrieval to the input guard,
# which scans it as untrusted content (as it scans a document or a tool's output); `seal`
# then folds it into the instructions' system message, before anything goes upstream.
DOCUMENT_ROLE = "document"


def with_context(messages: list[Any], passages: list[Passage]) -> list[Any]:
    """`messages` with the instructions (a system message) and the sources (a document, for
    the input guard) after the client's own system messages, which still come first."""
    position = 0
    while position < len(messages):
        message = messages[position]
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer"):
            break
        position += 1
    added = [{"role": "system", "content": INSTRUCTIONS},
             {"role": DOCUMENT_ROLE, "content": sources(passages)}]  # fmt: skip
    return [*messages[:position], *added, *messages[position:]]


def seal(messages: list[Any]) -> list[Any]:
    """The sources folded into the system message before them: what the upstream is sent."""
    out: list[Any] = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == DOCUMENT_ROLE:
            if out and isinstance(out[-1], dict) and out[-1].get("role") == "system":
                out[-1] = {
                    **out[-1],
                    "content": f"{out[-1].get('content')}\n\n{message['content']}",
                }
            else:
                out.append({**message, "role": "system"})
            continue
        out.append(message)
    return out


def cited(answer: str, passages: list[Passage]) -> list[int]:
    """The passage numbers the answer's `[n]` markers name, in order, each once."""
    known = {p.number for p in passages}
    seen: dict[int, None] = {}
    for match in _MARKER.finditer(answer):
        number = int(match.group(1))
        if number in known:
            seen[number] = None
    return list(seen)


@dataclass(frozen=True)
class Retrieval:
    """What one call retrieved: the request, the question searched for, the passages."""

    request: KnowledgeRequest
    query: str
    passages: list[Passage]

    def citations(self, answer: str | None = None) -> list[dict[str, Any]]:
        """The citations list of the response; with the answer, each says whether the
        answer's text cites it (`cited`)."""
        used = set(cited(answer, self.passages)) if answer is not None else None
        out = []
        for passage in self.passages:
            citation = passage.citation()
            if used is not None:
                citation["cited"] = passage.number in used
            out.append(citation)
        return out

    def texts(self) -> list[str]:
        return [passage.hit.text for passage in self.passages]
