"""A PII span, and what is done with the spans the recognizers and the tagger found.

Names listed with a name or repeated in the text are names too; a name-shaped span that
context shows is a company, a place or a numeral is dropped; the lines of one address
join into one address, with its house number and postcode. `keel.guard.pii.detect` runs
these after the recognizers and the tagger (see docs/guardrails.md for what each gained).
"""

# ruff: noqa: RUF001  (look-alike letters and other scripts are this module's data)

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PiiMatch:
    entity: str
    start: int
    end: int
    score: float
    value: str


class SpanIndex:
    """Spans that never overlap, in order of start (so of end too), for overlap queries by
    bisection: a text with thousands of spans (a pasted table) costs no more than its size."""

    def __init__(self, spans: Iterable[PiiMatch] = ()) -> None:
        self.spans: list[PiiMatch] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        for m in spans:
            self.add(m)

    def overlapping(self, start: int, end: int) -> list[PiiMatch]:
        i = bisect_right(self._ends, start)
        out = []
        while i < len(self.spans) and self.spans[i].start < end:
            out.append(self.spans[i])
            i += 1
        return out

    def add(self, match: PiiMatch) -> None:
        i = bisect_right(self._starts, match.start)
        self.spans.insert(i, match)
        self._starts.insert(i, match.start)
        self._ends.insert(i, match.end)

    def remove(self, match: PiiMatch) -> None:
        i = bisect_left(self._starts, match.start)
        while self.spans[i] is not match:
            i += 1
        del self.spans[i], self._starts[i], self._ends[i]


# The last word of a company's or a band's name, English and the legal forms of other
# countries; the capitalised words before it are its name ("Galorath Incorporated",
# "Christoffersen A/S", "Lacombe Mathieu SARL").
ORG_SUFFIX = (
    r"(?:Inc|Incorporated|Corp|Corporation|Co|Company|Ltd|Limited|LLC|LLP|PLC|GmbH|AG|SA|"
    r"SAS|BV|NV|Group|Holdings|Partners|Associates|Technologies|Technology|Solutions|"
    r"Systems|Services|Consulting|Industries|Enterprises|Labs|Bank|Insurance|Investments|"
    r"Capital|Orchestra|Band|Foundation|Institute|Research|Agency|Media|TV|Records|Studios|"
    r"Ratings|Lines|Airlines|Motors|Pharmaceuticals|Software|Networks|Logistics|Trust|"
    r"SpA|S\.p\.A|SPA|SRL|S\.r\.l|S\.L\.U|S\.L|S\.A|S\.A\.R\.L|SARL|S\.A\.S|S\.Coop|A/S|ApS|"
    r"AB|HB|KB|Oy|Oyj|AS|ASA|KG|OHG|KGaA|e\.V|eG|Ltda|s\.r\.o|a\.s|Sp\. z o\.o|Kft|Zrt|Bt|"
    r"d\.o\.o|d\.d|Stichting|Filhos|Hijos|Figli|Söhne|Søn|Sønner|Zonen|S/A|Sp\.k|Sp\.j|s\.c|"
    r"v\.o\.s|k\.s|mbH)"
)
# One word of a name: capitalised ("Kónya", "O'Neill", "Smith-Jones") or an initial ("J.").
NAME_TOKEN = r"(?:[A-ZÀ-ÖØ-ÞĀ-Ž][a-zà-öø-ÿā-ž'’-]+|[A-Z]\.)"
_NOT_NAMES_TEXT = """The A An And Or But If When Where What Who Why How This That These Those
    There Here
    It Its I We You He She They My Your His Her Our Their Me Us Them Please Thanks Thank
    Hello Hi Hey Dear Yes No Not Can Could Would Should Will May Might Must Do Does Did Is Are
    Was Were Be Been Have Has Had Get Got Let Make New Old Good Great Best First Last Next
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April
    June July August September October November December Street Road Avenue Lane Drive
    Bank Card Account Credit Debit Phone Email Address Name User Bot Customer Service
    Support Team Inc Ltd Company University College School Hospital City State Country
    North South East West United Kingdom States America Europe Asia Africa Australia
    Mr Mrs Ms Dr Prof Sir Suite Apt Apartment Unit Floor Box Street Billing Shipping
    Personal Info Website Phone Fax Mobile Order Invoice Date Time Today Tomorrow
    Yesterday Also Just Only Very Some Any All Every Each Both Many Much More Most Other
    TV Music Film Movie Song Album Book Chapter Part Section Page Table Figure"""
NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())  # capitalised words that are no names
PRONOUN_I = re.compile(r"^I(?:['’](?:m|ll|ve|d))?$")  # "I", "I'm", "I'll": no name
EDGE = " \t\r\n,;:.-–()[]<>\"'"  # trimmed off the ends of a span


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
_SURNAMES = (
    rf"{NAME_TOKEN},[ \t]+{NAME_TOKEN},?[ \t]+{_AND}[ \t]+{NAME_TOKEN}"
    rf"|{NAME_TOKEN}[ \t]+&[ \t]+{NAME_TOKEN}"
)
# Two surnames joined by a hyphen, with no given name before them, where a firm is named:
# "works at Thill-Thill", "I work for Ellis-Ingram", "the Bargetze-Hasler office".
_DOUBLE = r"[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+-[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+(?!['’\w-])"
# A member of a list touches a comma or a conjunction: "Webb, [Smith] and Hunt".
_LISTED_AFTER = re.compile(rf"[.]?(?:,|[ \t]+{_AND}[ \t])")
_LISTED_BEFORE = re.compile(rf"(?:,|[ \t]{_AND})[ \t]+$")
_FIRM_NAMED = re.compile(
    rf"\b(?:from|at|with|for|of|joined|left)[ \t]+(?:{_SURNAMES})(?![ \t]*,[ \t]*{NAME_TOKEN})"
    rf"|\b(?:at|for|[Tt]he)[ \t]+{_DOUBLE}(?![ \t]+famil)"
    rf"|(?m:^[ \t>|]*(?:{NAME_TOKEN},[ \t]+{NAME_TOKEN},?[ \t]+{_AND}[ \t]+{NAME_TOKEN})[ \t.]*$)"
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
_PLACE_SHAPE = re.compile(
    r"(?:North|South|East|West|New|Port|Lake|Mount)[ \t]+[A-ZÀ-Þ][\w'’-]*$"
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
_PLACE_WORD_BEFORE = re.compile(r"(?<![\w'’-])(?:North|South|East|West|New|Port|Lake|Mount) $")
# "a courier in Horní Planá", "a year at Numedii in Cheb", "in Ledeč nad Sázavou", "in Vila
# Real de Santo António": after "in", a place, its words joined by the particles of place
# names; but "in Maria's car" is about a person.
_PLACE_PARTICLE = r"(?:de|da|do|dos|das|del|della|di|du|des|la|le|nad|pod|am|an|im|upon|on|sur)"
_IN_BEFORE = re.compile(
    rf"(?<![\w'’])in[ \t]+(?:(?:[A-ZÀ-Þ][\w'’-]*|{_PLACE_PARTICLE})[ \t]+){{0,4}}$"
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


# Between two lines of one address: line breaks, commas, quote marks of a reply ("> ").
# Not a tab or a comma with no space after it: those part a table's cells ("Frankfurt,
# Burns-Johnson" in a CSV row are a town and a company, not one address).
_ADDRESS_GAP = re.compile(r"(?:[ \n\r>|]|,(?=[ \n\r]))*")
# A postcode after an address, on its line or at the start of the next ("\n> 10115 Berlin").
_POSTCODE_AFTER = re.compile(
    r"(?:[ ]*(?:,[ ]+)?|[ \t]*\n[ \t>|]*)"  # not over a table's cell break
    r"(?:[A-Z]{1,2}-?)?\d{3,6}(?:[ -]?\d{2,3}|[ ][A-Z]{2})?\b"
)
# A country or a region and its postcode, alone on the line after an address
# ("\n> Belgium 42940").
_PLACE_POSTCODE_LINE = re.compile(
    r"[ \t]*\n[ \t>|]*(?:[A-ZÀ-Þ][\wà-ÿ'’.-]*[ \t]+){1,3}\d{3,6}(?:[ -]?\d{2,3})?[ \t]*(?=\n|\Z)"
)
# A house number before a street the tagger found: "935 69 Gordon Terrace" (the second
# number is the building's), "at 74678 midtvollen 130 st.".
_HOUSE_NUMBER_BEFORE = re.compile(r"(?<![\w.,/-])\d{1,6}[A-Za-z]?[ \t]+\Z")


# The rest of a street's line after a comma, when it is only capitalised words and the
# particles of place names: its town ("56 Roberts Court, North Victoria", "K Otočce 6,
# Planá nad Lužnicí").
_TOWN_REST = re.compile(
    rf"[ \t]*,[ \t]*(?:[A-ZÀ-Þ][\w'’-]*|{_PLACE_PARTICLE})(?:[ \t]+(?:[A-ZÀ-Þ][\w'’-]*|"
    rf"{_PLACE_PARTICLE})){{0,3}}(?=[ \t.]*(?:\n|\Z))"
)


def _towns_after(text: str, matches: list[PiiMatch]) -> list[PiiMatch]:
    """A name the tagger found in the town after a street, on the street's line, is that
    town: the address takes it in, and the name goes."""
    out: list[PiiMatch] = []
    town_end = -1
    for i, m in enumerate(matches):
        if m.end <= town_end and m.entity == "PERSON":
            continue  # inside the town an address took in
        town = _TOWN_REST.match(text, m.end) if m.entity == "STREET_ADDRESS" else None
        if town and _name_within(matches, i + 1, town.end()):
            town_end = town.end()
            m = PiiMatch(m.entity, m.start, town_end, m.score, text[m.start : town_end])
        out.append(m)
    return out


def _name_within(matches: list[PiiMatch], i: int, end: int) -> bool:
    """Whether a name is among `matches[i:]` (in order) that end by `end`."""
    while i < len(matches) and matches[i].end <= end:
        if matches[i].entity == "PERSON":
            return True
        i += 1
    return False


def join_addresses(text: str, matches: list[PiiMatch]) -> list[PiiMatch]:
    """Address parts that follow one another become one address, with a postcode after it.

    A street, its unit, its town and its country read as one address; hidden as separate
    pieces, the postcode between or after them would stay visible.
    """
    out: list[PiiMatch] = []
    for m in matches:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.entity == "STREET_ADDRESS"
            and (
                m.entity == "STREET_ADDRESS"
                # A town in capitals on the line after a street ("Apt. 030\n KOKKOLA").
                or (m.entity == "PERSON" and m.value.isupper() and "\n" in text[prev.end : m.start])
            )
            and _ADDRESS_GAP.fullmatch(text, prev.end, m.start)
        ):
            out[-1] = PiiMatch(
                prev.entity, prev.start, m.end, max(prev.score, m.score), text[prev.start : m.end]
            )
            continue
        out.append(m)
    out = _towns_after(text, out)
    for i, m in enumerate(out):
        if m.entity != "STREET_ADDRESS":
            continue
        start, end = m.start, m.end
        floor = out[i - 1].end if i else 0
        number = _HOUSE_NUMBER_BEFORE.search(text, max(floor, start - 12), start)
        if number:
            start = number.start()
        limit = out[i + 1].start if i + 1 < len(out) else len(text)
        for after in (_POSTCODE_AFTER, _PLACE_POSTCODE_LINE):
            post = after.match(text, end)
            if post and post.end() <= limit:
                end = post.end()
        if (start, end) != (m.start, m.end):
            out[i] = PiiMatch(m.entity, start, end, m.score, text[start:end])
    return out
