"""Which name-shaped spans are names, by the text around them.

Names listed with a name or repeated in the text are names too. A name-shaped span that
context shows is a company, a place or a numeral is not: a list of surnames where a firm
is named ("is from Webb, Smith and Hunt"), the words before a company's legal form, a place
after "in" or a journey, a word shaped like a place ("North Victoria", "Martinezview") or
followed by a landmark, a firm said to be one, a name after a name and "of".
`keel.guard.pii.detect` runs these after the recognizers and the tagger (see
docs/guardrails.md for what each gained).
"""
# ruff: noqa: RUF001  (look-alike letters and other scripts are this module's data)

from __future__ import annotations

import re

from keel.guard.pii_spans import (
    EDGE,
    NAME_TOKEN,
    NOT_NAMES,
    ORG_SUFFIX,
    PLACE_PARTICLE,
    PRONOUN_I,
    PiiMatch,
    SpanIndex,
)

# The last word of a company's or a band's name; the capitalised words before it, with
# their commas and "and"s, are its name and not people ("Davis, Reynolds and Williamson
# Orchestra", "Galorath Incorporated").
_ORG_RUN = re.compile(
    rf"(?:(?:{NAME_TOKEN},[ \t]+)*{NAME_TOKEN}[ \t]+(?:and|&)[ \t]+)?"
    rf"(?:{NAME_TOKEN}[ \t]+){{1,3}}{ORG_SUFFIX}\b\.?"
)
_ORG_WORD = re.compile(rf"\b{ORG_SUFFIX}\b")
# Surnames listed after "the" name a firm ("the Lopez, Cooke and Miller office"), and so
# does "X and Sons"; people are listed without an article ("founders: Lopez, Cooke and …").
_FIRM_LIST = re.compile(
    rf"\b[Tt]he[ \t]+(?:{NAME_TOKEN},[ \t]+)*{NAME_TOKEN},?[ \t]+(?:and|&)[ \t]+{NAME_TOKEN}\b"
    rf"|{NAME_TOKEN}[ \t]+(?:and|&)[ \t]+Sons\b"
)
# Surnames listed where a firm is named: after a word that puts a person in an organisation
# ("is from Webb, Smith and Hunt", "a year at Jones, Mitchell and Williams", "I work for
# Lutz, Downs and Gray", "from Bave & Romijn"), or alone on a line, as under a signature's
# name. People are listed otherwise ("our founders: Kónya, Becker and Vasquez"), and a list
# that goes on ("Anna, Maria, John and Eve") is no firm of three.
_AND = r"(?:and|&|e|y|et|und|en|og|och|i)"
_THREE = rf"{NAME_TOKEN},[ \t]+{NAME_TOKEN},?[ \t]+{_AND}[ \t]+{NAME_TOKEN}"
_SURNAMES = rf"{_THREE}|{NAME_TOKEN}[ \t]+&[ \t]+{NAME_TOKEN}"
# Two surnames joined by a hyphen, with no given name before them, where a firm is named:
# "works at Thill-Thill", "I work for Ellis-Ingram", "the Bargetze-Hasler office".
_DOUBLE = r"[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+-[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+(?!['’\w-])"
# A member of a list touches a comma or a conjunction: "Webb, [Smith] and Hunt".
_LISTED_AFTER = re.compile(rf"[.]?(?:,|[ \t]+{_AND}[ \t])")
_LISTED_BEFORE = re.compile(rf"(?:,|[ \t]{_AND})[ \t]+$")
_FIRM_NAMED = re.compile(
    rf"\b(?:from|at|with|for|of|joined|left)[ \t]+(?:{_SURNAMES})(?![ \t]*,[ \t]*{NAME_TOKEN})"
    rf"|\b(?:at|for|[Tt]he)[ \t]+{_DOUBLE}(?![ \t]+famil)"
    rf"|(?m:^[ \t>|]*(?:{_THREE})[ \t.]*$)"
)
# A place after a journey: "flew to Leppen", "returned to Feliciano", "home city Assen".
_PLACE_BEFORE = re.compile(
    r"(?:\b(?:flew|fly|flying|flight|travel(?:l?ed|ling|s)?|moving|moved|returned|arrived|"
    r"drove|driving|commute[sd]?|relocat(?:ed|ing)|coming|came|went|trip)\s+(?:back\s+)?"
    r"(?:to|from|in|at|into)|\bhome\s+(?:city|town)|\bcity of|\btown of|\buniversity of)\s+$",
    re.IGNORECASE,
)
# A word that names a place or a building after the span, with a capitalised word or none
# between, in one run of words (not across a table's cells): "The Golden Gate Bridge", "the
# Amazon River", "Upton Scudamore Country Club".
# Words that are also common surnames (Park, Hall, Church, Lake, Rivers) are left out.
_LANDMARK_AFTER = re.compile(
    r"(?: (?!The )[A-ZÀ-Þ][\w'’-]*)? (?:Bridge|Tower|River|Islands|Mountains|Museum|Cathedral|"
    r"Palace|Airport|Stadium|University|Valley|Canyon|Falls|Country Club|Memorial|Monument|"
    r"Desert|Ocean|National Park)\b"
)
# The shape of a place's name: a word of direction or a lake, port or mount before a word
# ("North Victoria", "Port Tracibury", "New Lorraineland"), or one word with an ending of
# English place names that surnames do not have ("Martinezview", "Yorkshire", "Portsmouth").
_PLACE_PREFIX = r"(?:North|South|East|West|New|Port|Lake|Mount)"
_PLACE_SHAPE = re.compile(
    rf"{_PLACE_PREFIX}[ \t]+[A-ZÀ-Þ][\w'’-]*$"
    r"|[A-ZÀ-Þ][\w'’-]*(?:view|shire|haven|mouth|borough|stad|furt|burgh|town)$"
)
# "Telenav is a design agency based in …", "Persint is an German multinational": what a
# company is, said of it; not "Ana is a bank teller".
_IS_A_FIRM = re.compile(
    r"[ \t]+(?:is|was)[ \t]+an?[ \t]+(?:[\w-]+[ \t]+){0,3}?(?:company|multinational|agency|firm|"
    r"startup|start-up|corporation|conglomerate|manufacturer|retailer|consultancy|brand)\b"
    r"(?![ \t]+(?:owner|director|manager|founder|employee|worker|executive|officer|partner|"
    r"lawyer|analyst|consultant|clerk|teller))"
)
_PLACE_WORD_BEFORE = re.compile(rf"(?<![\w'’-]){_PLACE_PREFIX} $")
# "a courier in Horní Planá", "a year at Numedii in Cheb", "in Ledeč nad Sázavou", "in Vila
# Real de Santo António": after "in", a place, its words joined by the particles of place
# names; but "in Maria's car" is about a person.
_IN_BEFORE = re.compile(
    rf"(?<![\w'’])in[ \t]+(?:(?:[A-ZÀ-Þ][\w'’-]*|{PLACE_PARTICLE})[ \t]+){{0,4}}$"
)
_POSSESSIVE_AFTER = re.compile(r"['’]s?\b")
# "Title VII", "Henry IV": a numeral, but not one that is also a name ("Xi", "Li").
_ROMAN = re.compile(r"^(?:II|III|IV|VI|VII|VIII|IX|XII|XIII|XIV|XV|XVI|XVII|XVIII|XIX|XX)$")


def _in_run(run: re.Pattern[str], text: str, match: PiiMatch) -> bool:
    """Whether a match of `run` within 80 characters either side holds all of `match`, bar
    the full stop or question mark that ends its sentence ("… and Bibisorayeva.")."""
    end = match.start + len(match.value.rstrip(".,:;?!"))
    found = run.finditer(text, max(0, match.start - 80), match.end + 80)
    return any(r.start() <= match.start and end <= r.end() for r in found)


def _listed(text: str, match: PiiMatch) -> bool:
    """Whether `match` is in a list or is a double surname, as a firm's name would be."""
    return (
        any(c in match.value for c in "-,&")
        or _LISTED_AFTER.match(text, match.end) is not None
        or _LISTED_BEFORE.search(text, max(0, match.start - 6), match.start) is not None
    )


def not_a_person(text: str, match: PiiMatch) -> bool:
    """A name-shaped span that context shows is a company, a place or a numeral."""
    if _ROMAN.match(match.value.strip(".,:;")):
        return True
    # The run ends in a company word after the name: look for one before trying the run.
    if _ORG_WORD.search(text, match.start, min(len(text), match.end + 80)) and _in_run(
        _ORG_RUN, text, match
    ):
        return True
    if _IN_BEFORE.search(text, max(0, match.start - 40), match.start) and not (
        _POSSESSIVE_AFTER.match(text, match.end) or match.value.endswith(("'s", "’s"))
    ):
        return True
    # A firm's run holds a list or a double surname: look for one before trying the runs.
    if _listed(text, match) and (
        _in_run(_FIRM_LIST, text, match) or _in_run(_FIRM_NAMED, text, match)
    ):
        return True
    value = match.value.rstrip(".,:;?!")
    if _LANDMARK_AFTER.match(text, match.end) or _PLACE_SHAPE.match(value):
        return True
    if _IS_A_FIRM.match(text, match.end):
        return True
    if " " not in value and _PLACE_WORD_BEFORE.search(text, max(0, match.start - 8), match.start):
        return True  # "from South Debra", "in the Lake Lisaville office"
    return bool(_PLACE_BEFORE.search(text, max(0, match.start - 40), match.start))


def of_a_name(text: str, matches: list[PiiMatch]) -> list[PiiMatch]:
    """`matches` (in order) less the names right after a name and "of": "Rościsław Dudek of
    Lexisnexis", "Yuito Hirai of Reed Elsevier" name where a person works or comes from."""
    out: list[PiiMatch] = []
    for m in matches:
        prev = out[-1] if out else None
        if (
            m.entity == "PERSON"
            and prev is not None
            and prev.entity == "PERSON"
            and text[prev.end : m.start] == " of "
        ):
            continue
        out.append(m)
    return out


# A list in prose has a space after its commas; a CSV row has none.
_LIST_AFTER = re.compile(rf"(?:, +(?:(?:and|&)[ \t]+)?|[ \t]+(?:and|&)[ \t]+)({NAME_TOKEN})\b")
_LIST_BEFORE = re.compile(rf"(?<![\w.])({NAME_TOKEN})(?:, +|[ \t]+(?:and|&)[ \t]+)\Z")


def name_lists(text: str, matches: list[PiiMatch], english: frozenset[str]) -> list[PiiMatch]:
    """Capitalised words listed with a name are names too ("Kónya, Becker and Vasquez"),
    also where the tagger took one of them alone for an organisation."""
    index = SpanIndex(matches)
    todo = [m for m in matches if m.entity == "PERSON"]
    while todo:
        m = todo.pop()
        found = []
        after = _LIST_AFTER.match(text, m.end)
        if after:
            found.append((after.start(1), after.end(1)))
        before = _LIST_BEFORE.search(text, max(0, m.start - 40), m.start)
        if before:
            found.append((before.start(1), before.end(1)))
        for start, end in found:
            word = text[start:end]
            if word in NOT_NAMES or word.lower() in english or PRONOUN_I.match(word):
                continue
            overlapping = index.overlapping(start, end)
            if overlapping and not (
                len(overlapping) == 1
                and overlapping[0].entity == "ORGANIZATION"
                and overlapping[0].value.strip(EDGE) == word
            ):
                continue
            name = PiiMatch("PERSON", start, end, m.score, word)
            if not_a_person(text, name):
                continue
            for k in overlapping:
                index.remove(k)
            index.add(name)
            todo.append(name)
    return index.spans


_NAME_WORD = re.compile(r"[^\W\d_][\w'’.-]*")


def repeated_names(text: str, matches: list[PiiMatch], english: frozenset[str]) -> list[PiiMatch]:
    """A name found once is hidden wherever else the text writes it ("Hakuba had given
    Hakuba his address"), and so is each word of a full name ("Asya ... Asya Godina")."""
    names = {
        word
        for m in matches
        if m.entity == "PERSON"
        for word in (w.strip(EDGE) for w in m.value.split())
        if _NAME_WORD.fullmatch(word)
        and len(word) >= 3
        and word not in NOT_NAMES
        and word.lower() not in english
    }
    if not names:
        return matches
    index = SpanIndex(matches)
    for found in _NAME_WORD.finditer(text):
        word = found.group(0).rstrip(".'’-")
        start, end = found.start(), found.start() + len(word)
        if word not in names or index.overlapping(start, end):
            continue
        name = PiiMatch("PERSON", start, end, 0.6, word)
        if not not_a_person(text, name):
            index.add(name)
    return index.spans
