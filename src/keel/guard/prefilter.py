"""Literal text a regular expression cannot match without, to skip patterns cheaply.

`required_literals(pattern)` reads the parsed pattern and returns a condition over
ASCII strings that every match contains (for instance "ignor" and one of "instruction",
"rule", …). `Literals(text)` answers it with plain substring search, which is much
faster than running a pattern at every position, so scanners with many patterns run
only the ones that can match; a skipped pattern is one that would have found nothing.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

# Every character that matches an ASCII letter under re.IGNORECASE, mapped to that
# letter in lower case: A-Z and the four others Python's `re` folds to Latin letters
# (checked against `re` itself in tests/guard/test_prefilter.py). Other ASCII characters
# match only themselves, so after folding, a literal a pattern matched is a substring.
_FOLD = str.maketrans(
    {
        **{chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)},
        "\u0130": "i",  # capital I with dot above
        "\u0131": "i",  # dotless i
        "\u017f": "s",  # long s
        "\u212a": "k",  # Kelvin sign
    }
)


def fold(text: str) -> str:
    """`text` with every character that can match an ASCII letter replaced by it."""
    return text.translate(_FOLD)


# Identity equality: equal conditions are one object (see LiteralAnalysis), so a text's
# answer to one is remembered by the object, without hashing its contents.
@dataclass(frozen=True, slots=True, eq=False)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True, eq=False)
class AnyOf:
    parts: tuple[Condition, ...]


# A lower-case ASCII string the text must contain, or all or any of such conditions.
Condition = str | AllOf | AnyOf

# Below this length running a pattern costs less than checking what it needs.
MIN_CHARS = 64


class Literals:
    """What one text contains, for `allow`; each literal and condition is looked up once."""

    __slots__ = ("_answers", "_short", "_text")

    def __init__(self, text: str) -> None:
        self._short = len(text) < MIN_CHARS
        self._text = "" if self._short else fold(text)
        self._answers: dict[Condition, bool] = {}

    def allow(self, condition: Condition | None) -> bool:
        """False only when the text lacks what `condition` requires."""
        if condition is None or self._short:
            return True
        return self._holds(condition)

    def _holds(self, condition: Condition) -> bool:
        answer = self._answers.get(condition)
        if answer is None:
            if isinstance(condition, str):
                answer = condition in self._text
            elif isinstance(condition, AllOf):
                answer = all(map(self._holds, condition.parts))
            else:
                answer = any(map(self._holds, condition.parts))
            self._answers[condition] = answer
        return answer


class LiteralAnalysis:
    """Reads what patterns' matches must contain. Conditions several patterns share (the
    same verb list in four rules) come out as one object, answered once per text."""

    def __init__(self) -> None:
        self._shared: dict[tuple[type, tuple[Condition, ...]], Condition] = {}

    def __call__(self, pattern: re.Pattern[str]) -> Condition | None:
        """What every match of `pattern` contains, or None when nothing is certain (then
        the pattern must always run). Reads it with Python's own regex parser."""
        try:
            parser: Any = importlib.import_module("re._parser")
            consts: Any = importlib.import_module("re._constants")
            parsed = parser.parse(pattern.pattern, pattern.flags)
            return _Analysis(consts, self._shared).sequence(parsed)
        except (ImportError, AttributeError, TypeError, ValueError, re.error):
            # Another Python's internals: skipping nothing is always correct.
            return None


def required_literals(pattern: re.Pattern[str]) -> Condition | None:
    """What every match of `pattern` contains (see `LiteralAnalysis`)."""
    return LiteralAnalysis()(pattern)


class _Analysis:
    def __init__(
        self, consts: Any, shared: dict[tuple[type, tuple[Condition, ...]], Condition]
    ) -> None:
        self.c = consts
        self.shared = shared

    def sequence(self, items: Any) -> Condition | None:
        c = self.c
        parts: list[Condition | None] = []
        run: list[str] = []
        for op, av in items:
            if op is c.LITERAL and av < 128:
                run.append(chr(av).lower())
                continue
            if run:
                parts.append("".join(run))
                run = []
            parts.append(self.node(op, av))
        if run:
            parts.append("".join(run))
        return self.all(parts)

    def node(self, op: Any, av: Any) -> Condition | None:
        c = self.c
        if op is c.SUBPATTERN:
            return self.sequence(av[-1])
        if op is c.ATOMIC_GROUP:
            return self.sequence(av)
        if op is c.BRANCH:
            return self.any([self.sequence(alternative) for alternative in av[1]])
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, _high, body = av
            return self.sequence(body) if low >= 1 else None
        # Character sets, anchors, look-arounds, back-references: nothing certain.
        return None

    def all(self, parts: list[Condition | None]) -> Condition | None:
        flat: list[Condition] = []
        for part in parts:
            if isinstance(part, AllOf):
                flat.extend(part.parts)
            elif part is not None:
                flat.append(part)
        strings = {p for p in flat if isinstance(p, str)}
        # A literal inside a longer required one adds nothing.
        implied = {s for s in strings if any(s != t and s in t for t in strings)}
        kept = list(dict.fromkeys(p for p in flat if p not in implied))
        if not kept:
            return None
        if len(kept) == 1:
            return kept[0]
        # Cheapest and most selective first: literals (longest first), then small sets.
        kept.sort(key=lambda p: (0, -len(p)) if isinstance(p, str) else (1, _size(p)))
        return self.share(AllOf, kept)

    def any(self, parts: list[Condition | None]) -> Condition | None:
        flat: list[Condition] = []
        for part in parts:
            if part is None:
                return None  # one alternative needs nothing, so neither does the whole
            if isinstance(part, AnyOf):
                flat.extend(part.parts)
            else:
                flat.append(part)
        strings = {p for p in flat if isinstance(p, str)}
        # When a literal holds a shorter alternative, finding the shorter one suffices.
        covered = {s for s in strings if any(t != s and t in s for t in strings)}
        kept = list(dict.fromkeys(p for p in flat if p not in covered))
        if not kept:
            return None
        if len(kept) == 1:
            return kept[0]
        return self.share(AnyOf, kept)

    def share(self, kind: type[AllOf] | type[AnyOf], parts: list[Condition]) -> Condition:
        key = (kind, tuple(parts))
        node = self.shared.get(key)
        if node is None:
            node = self.shared[key] = kind(key[1])
        return node


def _size(condition: Condition) -> int:
    if isinstance(condition, str):
        return 1
    return sum(_size(p) for p in condition.parts)
