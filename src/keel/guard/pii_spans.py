"""A PII span, the word shapes the name rules share, and the joining of addresses.

The lines of one address join into one address, with its house number, postcode and town.
`keel.guard.pii.detect` runs this after the recognizers and the tagger; which name-shaped
spans are names is `keel.guard.pii_names` (see docs/guardrails.md for what each gained).
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


# The particles that join the words of a place's name ("Ledeč nad Sázavou").
PLACE_PARTICLE = r"(?:de|da|do|dos|das|del|della|di|du|des|la|le|nad|pod|am|an|im|upon|on|sur)"
# The rest of a street's line after a comma, when it is only capitalised words and the
# particles of place names: its town ("56 Roberts Court, North Victoria", "K Otočce 6,
# Planá nad Lužnicí").
_TOWN_REST = re.compile(
    rf"[ ]*,[ ]+(?:[A-ZÀ-Þ][\w'’-]*|{PLACE_PARTICLE})(?:[ \t]+(?:[A-ZÀ-Þ][\w'’-]*|"
    rf"{PLACE_PARTICLE})){{0,3}}(?=[ \t.]*(?:\n|\Z))"
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
