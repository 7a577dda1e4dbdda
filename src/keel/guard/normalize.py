"""Undo the tricks that hide text from scanners, before anything looks at it.

`normalize()` strips invisible characters (reporting where they were and what Unicode tag
characters spelled), applies NFKC, maps look-alike letters to Latin, reads leetspeak, and
decodes base64, hex, percent, HTML-entity, \\u-escape, rot13 and reversed payloads into
extra views that scanners check as well as the text itself.
"""

# ruff: noqa: RUF001  (look-alike letters and other scripts are this module's data)

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

from keel.guard.base import Finding

# Format characters that render as nothing. ZWJ and variation selectors are judged by
# their neighbours (emoji use them legitimately); the rest are reported wherever they are.
_ZERO_WIDTH = {
    0x00AD,  # soft hyphen
    0x034F,  # combining grapheme joiner
    0x061C,  # Arabic letter mark
    0x115F,
    0x1160,  # Hangul fillers
    0x17B4,
    0x17B5,  # Khmer inherent vowels
    0x180E,  # Mongolian vowel separator
    0x200B,
    0x200C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    0x202A,
    0x202B,
    0x202C,
    0x202D,
    0x202E,
    0x2060,
    0x2061,
    0x2062,
    0x2063,
    0x2064,
    0x2066,
    0x2067,
    0x2068,
    0x2069,
    0x206A,
    0x206B,
    0x206C,
    0x206D,
    0x206E,
    0x206F,
    0x3164,  # Hangul filler
    0xFEFF,
    0xFFA0,
    0xFFF9,
    0xFFFA,
    0xFFFB,
}
_ZWJ = 0x200D
_TAG_FIRST, _TAG_LAST = 0xE0000, 0xE007F
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}
# Printable ASCII, tabs and line breaks are never invisible: only other characters need
# the checks in `_invisible_kind` (most prompts have none, or a few).
_MAYBE_INVISIBLE = re.compile(r"[^\t\n\r\x20-\x7e]")

# Letters from other scripts that look like Latin ones (a subset of Unicode's confusables:
# the ones seen in obfuscated prompts). NFKC already folds fullwidth and math letters.
_HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j",
        "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y",
        "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ь": "b", "ɡ": "g", "п": "n",
        "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
        "С": "C", "Т": "T", "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Ь": "b",
        # Greek
        "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v",
        "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j", "ω": "w",
        "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
        "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
        # Armenian and Latin look-alikes
        "օ": "o", "ս": "u", "ո": "n", "ı": "i", "ɑ": "a", "ɩ": "i", "ʟ": "l", "ɪ": "i",
    }
)  # fmt: skip
_HOMOGLYPH_CHARS = frozenset(chr(c) for c in _HOMOGLYPHS)

_LEET = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
    "@": "a", "$": "s", "!": "i", "+": "t", "€": "e", "|": "l",
}  # fmt: skip
# A whole run of letters, digits and look-alike symbols, if it holds one of the symbols
# (`read_leetspeak` leaves the others as they are, so they need not be visited).
_LEET_TOKEN = re.compile(r"(?<![a-z0-9@$!+€|])[a-z0-9@$!+€|]*[0134578@$!+€|][a-z0-9@$!+€|]*")
_EMAIL_LIKE = re.compile(r"[a-z0-9]{2,}@[a-z]{3,}")

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){8,}(?![0-9A-Fa-f])")
_HEX_ESCAPED = re.compile(r"(?:(?:\\x|0x)[0-9A-Fa-f]{2}[\s,]*){6,}")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ENTITY = re.compile(r"&#(?:x[0-9A-Fa-f]+|[0-9]+);")
_UESCAPE = re.compile(r"\\u[0-9A-Fa-f]{4}")
_WORD = re.compile(r"[a-z]+")
_SPACED = re.compile(r"(?<!\S)(?:[^\W\d_] ){7,}[^\W\d_](?!\S)")

# Words that show a transformed text has become readable English (for rot13 and reversal).
_MARKERS = frozenset(
    [
        "the",
        "and",
        "you",
        "your",
        "all",
        "ignore",
        "previous",
        "instructions",
        "instruction",
        "system",
        "prompt",
        "reveal",
        "print",
        "say",
        "tell",
        "forget",
        "rules",
        "secret",
        "password",
        "now",
        "are",
        "what",
        "how",
        "with",
        "from",
        "this",
        "that",
        "not",
        "please",
        "give",
        "show",
        "output",
        "repeat",
        "above",
        "below",
        "must",
        "only",
        "act",
        "pretend",
    ]
)

_ROT13_MARKERS = frozenset(codecs.encode(word, "rot13") for word in _MARKERS)
_REVERSED_MARKERS = frozenset(word[::-1] for word in _MARKERS)

MAX_DEPTH = 2  # decoded payloads are themselves decoded once more (base64 of hex, …)


@dataclass(slots=True)
class View:
    """A version of the text for scanners: `kind` is "text" or how it was decoded."""

    kind: str
    text: str


@dataclass(slots=True)
class Normalized:
    """The text as scanners should read it, and what had to be undone to get there."""

    text: str
    views: list[View]
    invisible: list[Finding] = field(default_factory=list)
    hidden_text: str = ""
    homoglyphs: int = 0
    leet_tokens: int = 0

    @property
    def decoded(self) -> list[View]:
        return [v for v in self.views if v.kind != "text"]


def _is_emoji_like(ch: str) -> bool:
    return unicodedata.category(ch) in ("So", "Sk") or 0x1F000 <= ord(ch) <= 0x1FAFF


def strip_invisible(text: str) -> tuple[str, list[Finding], str]:
    """Remove characters that render as nothing; return (clean, findings, tag_text).

    Unicode tag characters (U+E0000 block) can spell ASCII invisibly; what they spell is
    returned so it can be scanned like any other text.
    """
    findings: list[Finding] = []
    tags: list[str] = []
    kept: list[str] = []
    n = len(text)
    copied = 0  # text[:copied] is in `kept` or was removed
    for candidate in _MAYBE_INVISIBLE.finditer(text):
        i = candidate.start()
        if i < copied:
            continue  # inside a run removed below
        kind = _invisible_kind(text, i)
        if not kind:
            continue
        start = i
        if kind == "unicode_tag" and 0xE0020 <= ord(text[i]) <= 0xE007E:
            tags.append(chr(ord(text[i]) - 0xE0000))
        while i + 1 < n and _same_run(text[i + 1], kind):
            i += 1
            if kind == "unicode_tag" and 0xE0020 <= ord(text[i]) <= 0xE007E:
                tags.append(chr(ord(text[i]) - 0xE0000))
        findings.append(
            Finding(kind=kind, start=start, end=i + 1, detail=f"{i + 1 - start} char(s)")
        )
        kept.append(text[copied:start])
        copied = i + 1
    if not findings:
        return text, findings, ""
    kept.append(text[copied:])
    return "".join(kept), findings, "".join(tags)


def _is_selector(cp: int) -> bool:
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def _invisible_kind(text: str, i: int) -> str:
    """What kind of invisible character text[i] is, or "" if it renders."""
    ch = text[i]
    cp = ord(ch)
    if _TAG_FIRST <= cp <= _TAG_LAST:
        return "unicode_tag"
    if cp in _ZERO_WIDTH:
        return "zero_width"
    if cp == _ZWJ:
        prev = text[i - 1] if i else ""
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if not (prev and nxt and _is_emoji_like(prev) and _is_emoji_like(nxt)):
            return "zero_width"
        return ""
    if _is_selector(cp):
        prev = text[i - 1] if i else ""
        # One selector after an emoji or symbol is ordinary; runs of them carry data.
        follows_vs = bool(prev) and _is_selector(ord(prev))
        if not prev or follows_vs or not _is_emoji_like(prev) or cp > 0xFE0F:
            return "variation_selector"
        return ""
    category = unicodedata.category(ch)
    if category == "Cc" and ch not in _ALLOWED_CONTROLS:
        return "control"
    if category == "Cf" and not _is_emoji_like(ch):
        return "format"
    return ""


def _same_run(ch: str, kind: str) -> bool:
    cp = ord(ch)
    if kind == "unicode_tag":
        return _TAG_FIRST <= cp <= _TAG_LAST
    if kind == "variation_selector":
        return _is_selector(cp)
    if kind == "zero_width":
        return cp in _ZERO_WIDTH or cp == _ZWJ
    return False


def map_homoglyphs(text: str) -> tuple[str, int]:
    """Map look-alike letters to Latin where the text or word around them is Latin.

    Whole Greek or Cyrillic passages are left alone: only letters inside words that also
    hold Latin letters, or anywhere in mostly-Latin text, are mapped. Returns the count.
    """
    if _HOMOGLYPH_CHARS.isdisjoint(text):
        return text, 0
    letters = [ch for ch in text if ch.isalpha()]
    latin = sum(1 for ch in letters if ch.isascii())
    if letters and latin * 2 > len(letters):
        count = sum(1 for ch in text if ch in _HOMOGLYPH_CHARS)
        return text.translate(_HOMOGLYPHS), count
    count = 0

    def fix(match: re.Match[str]) -> str:
        nonlocal count
        word = match.group(0)
        if any(ch.isascii() and ch.isalpha() for ch in word):
            count += sum(1 for ch in word if ch in _HOMOGLYPH_CHARS)
            return word.translate(_HOMOGLYPHS)
        return word

    return re.sub(r"\w+", fix, text), count


def read_leetspeak(text: str, lenient: bool = False) -> tuple[str, int]:
    """Replace leetspeak inside words ("1gn0r3" → "ignore"); returns (text, words changed).

    A word changes only when it mixes letters with look-alike digits or symbols inside
    it, or with at least two of them, so "mp3", "c++", "$5" and "hello!" stay as written.
    `lenient` also reads a single leading or trailing one ("7he"), for text already shown
    to be obfuscated.
    """
    changed = 0

    def fix(match: re.Match[str]) -> str:
        nonlocal changed
        token = match.group(0)
        letters = sum(1 for ch in token if "a" <= ch <= "z")
        leet = [i for i, ch in enumerate(token) if ch in _LEET]
        if letters < 2 or not leet or len(leet) > letters + 1:
            return token
        if any(ch.isdigit() and ch not in _LEET for ch in token):
            return token  # sha256, covid19: real words with numbers
        if _EMAIL_LIKE.search(token):
            return token  # name@example: an address, not leetspeak
        interior = any(0 < i < len(token) - 1 for i in leet)
        if not (lenient or interior or len(leet) >= 2):
            return token
        changed += 1
        out: list[str] = []
        for i, ch in enumerate(token):
            if ch == "1":
                nxt = _LEET.get(token[i + 1], token[i + 1]) if i + 1 < len(token) else ""
                # "ru1e5", "fo11ow", "on1y" read as l; "1gn0re", "c0nversat1on" as i.
                out.append("l" if nxt in ("e", "y", "l", "i") or out[-1:] == ["l"] else "i")
            else:
                out.append(_LEET.get(ch, ch))
        return "".join(out)

    out = _LEET_TOKEN.sub(fix, text)
    return out, changed


def _printable_ratio(text: str) -> float:
    if not text:
        return 0.0
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\t\r")
    return good / len(text)


def _readable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(1 for ch in text if ch.isalpha())
    if len(text) < 4 or _printable_ratio(text) < 0.95 or letters < len(text) * 0.5:
        return None
    return text


def readable_base64(token: str) -> str | None:
    """The text `token` encodes in base64, when that text is readable."""
    return _decode_base64(token)


def _decode_base64(token: str) -> str | None:
    if len(set(token)) < 8:  # long runs of one character, padding, ids like AAAAAAAA…
        return None
    raw = token.rstrip("=")
    raw += "=" * (-len(raw) % 4)
    try:
        if "-" in raw or "_" in raw:
            data = base64.urlsafe_b64decode(raw)
        else:
            data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _readable(data)


def _decode_hex(token: str) -> str | None:
    digits = re.sub(r"\\x|0x|[\s,]", "", token)
    try:
        return _readable(bytes.fromhex(digits))
    except ValueError:
        return None


def decode_payloads(text: str) -> list[View]:
    """Readable payloads hidden in `text` as base64, hex, percent, entities, escapes,
    rot13, reversed or s p a c e d text (one view per payload)."""
    views: list[View] = []
    for match in _SPACED.finditer(text):
        views.append(View("spaced", re.sub(r"(?<=\S) (?=\S)", "", match.group(0))))
    for match in _BASE64.finditer(text):
        decoded = _decode_base64(match.group(0))
        if decoded:
            views.append(View("base64", decoded))
    # Every escaped-hex match starts with \x or 0x: without them that pattern can be skipped.
    escaped = "\\x" in text or "0x" in text
    for pattern in (_HEX, _HEX_ESCAPED) if escaped else (_HEX,):
        for match in pattern.finditer(text):
            decoded = _decode_hex(match.group(0))
            if decoded:
                views.append(View("hex", decoded))
    if len(_PERCENT.findall(text)) >= 3:
        views.append(View("percent", urllib.parse.unquote(text)))
    if len(_ENTITY.findall(text)) >= 3:
        views.append(View("html_entity", html.unescape(text)))
    if len(_UESCAPE.findall(text)) >= 3:
        unescaped = _UESCAPE.sub(lambda m: chr(int(m.group(0)[2:], 16)), text)
        views.append(View("unicode_escape", unescaped))
    if text.isascii():
        # In ASCII text the words of the rot13 or reversed text are the text's words,
        # rot13-ed or reversed: one word list counts the marker words of all three.
        words = _WORD.findall(text.lower())
        plain = sum(map(_MARKERS.__contains__, words))
        for kind, markers in (("rot13", _ROT13_MARKERS), ("reversed", _REVERSED_MARKERS)):
            hits = sum(map(markers.__contains__, words))
            if hits >= 2 and hits > 2 * plain:
                transformed = codecs.encode(text, "rot13") if kind == "rot13" else text[::-1]
                views.append(View(kind, transformed))
    return views


def canonical(text: str) -> tuple[str, int, int]:
    """NFKC, homoglyphs, lower case, leetspeak and folded whitespace, for classifiers.

    Returns (text, homoglyphs mapped, leetspeak words read).
    """
    return _canonical_nfkc(unicodedata.normalize("NFKC", text))


def _canonical_nfkc(text: str) -> tuple[str, int, int]:
    """`canonical` of a text already in NFKC."""
    text, homoglyphs = map_homoglyphs(text)
    text = text.lower()
    strict, leet = read_leetspeak(text)
    if leet + homoglyphs >= 2:
        strict, leet = read_leetspeak(text, lenient=True)
    text = strict
    text = " ".join(text.split())
    return text, homoglyphs, leet


def normalize(text: str, max_depth: int = MAX_DEPTH) -> Normalized:
    """The canonical text plus every decoded view, each canonicalised the same way."""
    clean, invisible, hidden = strip_invisible(text)
    nfkc = unicodedata.normalize("NFKC", clean)
    canon, homoglyphs, leet = _canonical_nfkc(nfkc)
    views = [View("text", canon)]
    seen = {canon}
    # Decoders read the text before lower-casing: base64 and hex are case-sensitive.
    pending: list[tuple[str, str, int]] = [("text", nfkc, 0)]
    if hidden:
        pending.append(("unicode_tag", hidden, 0))
    while pending:
        kind, raw, depth = pending.pop(0)
        if kind != "text":
            view_text = canonical(raw)[0]
            if view_text and view_text not in seen:
                seen.add(view_text)
                views.append(View(kind, view_text))
        if depth < max_depth:
            for decoded in decode_payloads(raw):
                pending.append((decoded.kind, decoded.text, depth + 1))
    return Normalized(
        text=canon,
        views=views,
        invisible=invisible,
        hidden_text=hidden,
        homoglyphs=homoglyphs,
        leet_tokens=leet,
    )
