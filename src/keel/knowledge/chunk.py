"""Chunking: a parsed document cut into passages sized in the embedding model's tokens.

A chunk never spans two sections (a heading starts a new chunk); paragraphs are packed
whole while they fit, long ones are cut at sentence ends, and consecutive chunks of one
section share a few trailing sentences (the overlap) so a fact at a cut stays whole.
Offsets index the document's text, so a citation can point at the exact span.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keel.knowledge.parse import Block, ParsedDocument

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    heading_path: tuple[str, ...]
    token_count: int

    def embedding_text(self, title: str | None = None) -> str:
        """What is embedded and indexed: the chunk under its headings (and the document's
        title), so a passage that never names its subject still matches a query that does."""
        context = list(self.heading_path)
        if title and (not context or context[0] != title):
            context.insert(0, title)
        if not context:
            return self.text
        return " > ".join(context) + "\n" + self.text


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=\S)|\n+")
_WORD = re.compile(r"\S+")


def whitespace_tokens(texts: Sequence[str]) -> list[int]:
    """A stand-in counter (about 1.3 model tokens a word) for tests and tools without one."""
    return [round(len(_WORD.findall(text)) * 1.3) for text in texts]


def tokenizer_counter(tokenizer_json: Path) -> TokenCounter:
    """The model's own tokenizer (Hugging Face `tokenizer.json`), special tokens left out."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(item.ids) for item in encoded]

    return count


def lazy_counter(load: Callable[[], TokenCounter]) -> TokenCounter:
    """A counter that loads on first use (no file is read while services are wired)."""
    loaded: list[TokenCounter] = []

    def count(texts: Sequence[str]) -> list[int]:
        if not loaded:
            loaded.append(load())
        return loaded[0](texts)

    return count


def _sentences(text: str, offset: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    position = 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > position:
            spans.append((offset + position, offset + match.start()))
        position = match.end()
    if position < len(text):
        spans.append((offset + position, offset + len(text)))
    return spans


def _words(text: str, offset: int, counts: list[int], max_tokens: int) -> list[tuple[int, int]]:
    """Cut a run-on sentence (a table row, a log line) into windows of whole words."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    spans: list[tuple[int, int]] = []
    if not words:
        return spans
    total = max(1, counts[0])
    per_word = max(1, round(len(words) * max_tokens / total))
    for first in range(0, len(words), per_word):
        window = words[first : first + per_word]
        spans.append((offset + window[0][0], offset + window[-1][1]))
    return spans


class Chunker:
    def __init__(self, count_tokens: TokenCounter, max_tokens: int = 200, overlap_tokens: int = 40):
        if max_tokens < 16:
            raise ValueError("max_tokens must be at least 16")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = min(overlap_tokens, max_tokens // 2)

    def _units(self, document: ParsedDocument, blocks: list[Block]) -> list[_Unit]:
        """The section's text as units no larger than max_tokens: paragraphs, else
        sentences, else word windows."""
        text = document.text
        counts = self.count_tokens([block.text for block in blocks])
        units: list[_Unit] = []
        for block, count in zip(blocks, counts, strict=True):
            if count <= self.max_tokens:
                units.append(_Unit(block.start, block.end, count))
                continue
            spans = _sentences(block.text, block.start)
            span_counts = self.count_tokens([text[s:e] for s, e in spans])
            for (start, end), span_count in zip(spans, span_counts, strict=True):
                if span_count <= self.max_tokens:
                    units.append(_Unit(start, end, span_count))
                    continue
                pieces = _words(text[start:end], start, [span_count], self.max_tokens)
                piece_counts = self.count_tokens([text[s:e] for s, e in pieces])
                units.extend(_Unit(s, e, c) for (s, e), c in zip(pieces, piece_counts, strict=True))
        return units

    def _pack(
        self, document: ParsedDocument, units: list[_Unit], path: tuple[str, ...]
    ) -> list[Chunk]:
        chunks: list[Chunk] = []
        current: list[_Unit] = []
        tokens = 0
        fresh = 0  # units in `current` that no earlier chunk holds

        def emit() -> None:
            start, end = current[0].start, current[-1].end
            chunks.append(Chunk(document.text[start:end], start, end, path, tokens))

        for unit in units:
            if current and tokens + unit.tokens > self.max_tokens:
                emit()
                # Carry the last sentences, up to overlap_tokens, into the next chunk.
                carried: list[_Unit] = []
                carried_tokens = 0
                for previous in reversed(current):
                    if carried_tokens + previous.tokens > self.overlap_tokens:
                        break
                    if carried_tokens + previous.tokens + unit.tokens > self.max_tokens:
                        break
                    carried.insert(0, previous)
                    carried_tokens += previous.tokens
                current, tokens, fresh = carried, carried_tokens, 0
            current.append(unit)
            tokens += unit.tokens
            fresh += 1
        if current and fresh:
            emit()
        return chunks

    def chunk(self, document: ParsedDocument) -> list[Chunk]:
        """The document's chunks in reading order. A heading alone makes no chunk: it
        travels as the heading path of the text under it."""
        chunks: list[Chunk] = []
        section: list[Block] = []
        path: tuple[str, ...] = ()
        for block in document.blocks:
            if block.heading_level:
                if section:
                    chunks.extend(self._pack(document, self._units(document, section), path))
                    section = []
                path = block.heading_path
                continue
            if block.heading_path != path and section:
                chunks.extend(self._pack(document, self._units(document, section), path))
                section = []
            path = block.heading_path
            section.append(block)
        if section:
            chunks.extend(self._pack(document, self._units(document, section), path))
        if not chunks and document.blocks:  # headings only: keep them findable
            first, last = document.blocks[0], document.blocks[-1]
            text = document.text[first.start : last.end]
            chunks.append(Chunk(text, first.start, last.end, (), self.count_tokens([text])[0]))
        return chunks
