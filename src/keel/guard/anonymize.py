"""Reversible anonymization: stable placeholders in, original values back out.

A `Vault` lives for one request. `Anonymizer` swaps each value for `<ENTITY_n>` (the same
value gets the same placeholder); `Deanonymizer` puts values back into the model's answer,
and its `StreamingRestorer` does so chunk by chunk, holding back only a tail that could
still become a placeholder.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class Span(Protocol):
    @property
    def entity(self) -> str: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


def _key(value: str) -> str:
    return " ".join(value.split()).casefold()


class Vault:
    """The placeholders of one request and the values they stand for."""

    def __init__(self) -> None:
        self._placeholder_of: dict[tuple[str, str], str] = {}
        self._value_of: dict[str, str] = {}
        self._counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._value_of)

    def placeholder(self, entity: str, value: str, avoid: str = "") -> str:
        """The placeholder for `value`, new or already issued; never one found in `avoid`."""
        key = (entity, _key(value))
        found = self._placeholder_of.get(key)
        if found is not None:
            return found
        while True:
            self._counters[entity] += 1
            candidate = f"<{entity}_{self._counters[entity]}>"
            if candidate not in avoid:
                break
        self._placeholder_of[key] = candidate
        self._value_of[candidate] = value
        return candidate

    def value(self, placeholder: str) -> str | None:
        return self._value_of.get(placeholder)

    def placeholders(self) -> list[str]:
        return list(self._value_of)


class Anonymizer:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def anonymize(self, text: str, spans: Sequence[Span]) -> str:
        """`text` with every span replaced by its placeholder (spans must not overlap)."""
        out: list[str] = []
        at = 0
        for span in sorted(spans, key=lambda s: s.start):
            out.append(text[at : span.start])
            out.append(self.vault.placeholder(span.entity, text[span.start : span.end], text))
            at = span.end
        out.append(text[at:])
        return "".join(out)


class Deanonymizer:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def restore(self, text: str) -> str:
        """Every placeholder this vault issued, replaced by its value."""
        if not len(self.vault):
            return text
        return PLACEHOLDER.sub(lambda m: self.vault.value(m.group(0)) or m.group(0), text)

    def stream(self) -> StreamingRestorer:
        return StreamingRestorer(self)


class StreamingRestorer:
    """Restores placeholders in a stream whose chunks may split them anywhere."""

    def __init__(self, deanonymizer: Deanonymizer) -> None:
        self._deanonymizer = deanonymizer
        self._pending = ""

    def _held_from(self, text: str) -> int:
        """Index from which `text` must wait: a '<' whose tail may still be a placeholder."""
        at = text.rfind("<")
        if at == -1:
            return len(text)
        tail = text[at:]
        if any(p.startswith(tail) and p != tail for p in self._deanonymizer.vault.placeholders()):
            return at
        return len(text)

    def feed(self, chunk: str) -> str:
        """Text that is safe to emit now (possibly empty)."""
        text = self._pending + chunk
        cut = self._held_from(text)
        self._pending = text[cut:]
        return self._deanonymizer.restore(text[:cut])

    def flush(self) -> str:
        """Whatever is still held back, at the end of the stream."""
        text, self._pending = self._pending, ""
        return self._deanonymizer.restore(text)

    @property
    def held(self) -> int:
        return len(self._pending)
