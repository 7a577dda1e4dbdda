"""Personal data in text: recognizers with checksums, and a scanner that blocks or hides it.

Structured values are patterns plus validation (Luhn for cards, mod-97 for IBANs, address
parsing for IPs, issuing rules for SSNs and NINOs). Names, street addresses and
organisations come from a small token classifier (`pii_tagger`) together with the context
cues and address shapes below (see docs/guardrails.md for the measured numbers).
"""

# ruff: noqa: RUF001  (look-alike letters and other scripts are this module's data)

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from keel.guard.anonymize import Anonymizer, Vault
from keel.guard.base import Action, Finding, ScanContext, Stopwatch, Verdict, text_hash
from keel.guard.pii_context import DOCUMENT_NUMBER, name_columns, not_personal
from keel.guard.pii_names import name_lists, not_a_person, of_a_name, repeated_names
from keel.guard.pii_spans import (
    EDGE,
    NAME_TOKEN,
    NOT_NAMES,
    PRONOUN_I,
    PiiMatch,
    SpanIndex,
    join_addresses,
)

if TYPE_CHECKING:
    from keel.guard.pii_tagger import NameTagger, PieceScores, TaggedSpan

ENTITIES = (
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "IP_ADDRESS",
    "US_SSN",
    "UK_NINO",
    "DRIVER_LICENSE",
    "PERSON",
    "STREET_ADDRESS",
)
# Recognised on request only: an organisation's name is rarely personal data, and hiding
# it ("How do I export from Microsoft Teams?") would cost answers their meaning.
OPTIONAL_ENTITIES = ("ORGANIZATION",)
KNOWN_ENTITIES = ENTITIES + OPTIONAL_ENTITIES
TAGGED_ENTITIES = frozenset({"PERSON", "STREET_ADDRESS", "ORGANIZATION"})
PiiMode = Literal["block", "mask", "anonymize", "flag"]


# --- validators -------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(raw: str) -> bool:
    iban = re.sub(r"\s", "", raw).upper()
    if len(iban) != _IBAN_LENGTHS.get(iban[:2], -1):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# --- recognizers ------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){11,18}\d(?![\d-])")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|35|6(?:011|5|4[4-9]|2)|50|5[6-9]|6)")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_SSN = re.compile(r"(?<![\d-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\d-])")
_NINO = re.compile(
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
    re.IGNORECASE,
)
# A phone number stays on its line: "\s" in these patterns is any space but a line break
# (a CSV row's date and the next row's id, "2018-06-20\n12", are no phone).
_LINE_SPACE = r" \t\u00a0\u2000-\u200a\u202f\u205f\u3000"
_PHONE = re.compile(
    (
        r"(?<![\w+])(?:\+\(?\d{1,3}\)?[\s.-]?(?:\(0\)\s?)?(?:\d[\s.-])?|\(\d{2,4}\)[\s.-]?|"
        r"0\d{0,3}[\s.-]?)?"
        r"\d{2,4}(?:[\s.-]?\d{2,4}){1,4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w])"
        r"|(?<![\w+])\+\d{8,14}(?!\w)"
    )
    .replace(r"[\s.-]", rf"[{_LINE_SPACE}.-]")
    .replace(r"\s", rf"[{_LINE_SPACE}]")
)
_PHONE_CUE = re.compile(
    r"(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp|number|contact|reach me|"
    r"telefon|handy|nummer|answering at|\b[tmf](?=\s?:))\W{0,4}(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)
# A label after the number, as a signature writes it: "781 1704 office", "… (fax)".
_PHONE_CUE_AFTER = re.compile(
    r"[ \t:-]{0,3}\(?(?:office|fax|mobile|cell|home|work|direct|tel|phone)\b", re.IGNORECASE
)
_EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,5}$")
_DATE_LIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}(?:$|[ T]\d)")


def _emails(text: str) -> Iterable[PiiMatch]:
    for m in _EMAIL.finditer(text):
        yield PiiMatch("EMAIL", m.start(), m.end(), 1.0, m.group(0))


def _cards(text: str) -> Iterable[PiiMatch]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 12 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits):
            score = 1.0 if _CARD_PREFIX.match(digits) else 0.7
            yield PiiMatch("CREDIT_CARD", m.start(), m.end(), score, m.group(0))


def _ibans(text: str) -> Iterable[PiiMatch]:
    for m in _IBAN.finditer(text):
        if iban_valid(m.group(0)):
            yield PiiMatch("IBAN", m.start(), m.end(), 1.0, m.group(0))


def _ips(text: str) -> Iterable[PiiMatch]:
    for m in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group(0))
        except ValueError:
            continue
        yield PiiMatch("IP_ADDRESS", m.start(), m.end(), 0.9, m.group(0))
    for m in _IPV6.finditer(text):
        value = m.group(0)
        if value.count(":") < 2 or len(value) < 6:
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield PiiMatch("IP_ADDRESS", m.start(), m.end(), 0.9, value)


def _ssns(text: str) -> Iterable[PiiMatch]:
    for m in _SSN.finditer(text):
        if ssn_valid(m.group(1), m.group(3), m.group(4)):
            # Nine bare digits are often something else; separators make it an SSN.
            yield PiiMatch("US_SSN", m.start(), m.end(), 0.9 if m.group(2) else 0.4, m.group(0))


def _ninos(text: str) -> Iterable[PiiMatch]:
    for m in _NINO.finditer(text):
        yield PiiMatch("UK_NINO", m.start(), m.end(), 0.9, m.group(0))


# A driver's licence number has no shape of its own (each state or country has its own):
# it counts only after a cue that names it ("my driver's license number is F1628235").
_LICENSE_VALUE = re.compile(
    r"(?<![\w-])(?:[A-Z]{1,2}[ -]?)?\d[\d -]{3,16}\d(?![\w-])|(?<![\w-])[A-Z]\d{4,14}(?!\w)"
)
_LICENSE_CUE = re.compile(
    r"(?:(?:driver['’]?s?|driving)\W{0,3}licen[cs]e|\bDL\b|\bFührerschein|\bpermis de conduire)"
    r"\W{0,4}(?:(?:number|no|nr|num|id)\b\.?\W{0,4}|#\s?)?(?:is\W{0,4})?$",
    re.IGNORECASE,
)


_LICENSE_WORD = re.compile(r"licen[cs]e|\bDL\b|Führerschein|permis de conduire", re.IGNORECASE)


def _licenses(text: str) -> Iterable[PiiMatch]:
    if not _LICENSE_WORD.search(text):
        return  # no cue anywhere: no number to look at
    for m in _LICENSE_VALUE.finditer(text):
        if _LICENSE_CUE.search(text, max(0, m.start() - 40), m.start()):
            yield PiiMatch("DRIVER_LICENSE", m.start(), m.end(), 0.85, m.group(0))


def _phones(text: str) -> Iterable[PiiMatch]:
    for m in _PHONE.finditer(text):
        value = m.group(0).strip()
        # An extension's digits are not part of the number's length.
        digits = re.sub(r"\D", "", _EXTENSION.sub("", value))
        if not 7 <= len(digits) <= 15 or _DATE_LIKE.match(value):
            continue
        start = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
        before = text[max(0, start - 40) : start]
        cue = (
            _PHONE_CUE.search(before) is not None
            or _PHONE_CUE_AFTER.match(text, start + len(value)) is not None
        ) and not DOCUMENT_NUMBER.search(before)
        # Bare 7-8 digit groups are as often house numbers or codes: they need a cue.
        score = 0.45
        if value.startswith("+") or value.startswith("("):
            score = 0.9
        elif cue:
            score = 0.85
        elif len(digits) >= 9 and re.search(r"[\s.-]", value):
            score = 0.6
        elif len(digits) >= 8 and len(re.findall(r"[\s.-]", value)) >= 2:
            score = 0.55  # three or more groups: rarely a house number or a code
        yield PiiMatch("PHONE", start, start + len(value), score, value)


# Names: capitalised words after a cue, or a title, or as a "Firstname Lastname" pair.
_NAME = rf"{NAME_TOKEN}(?:[ \t]+{NAME_TOKEN}){{0,3}}"
# One word boundary and a check of the first letter before the cues: without it, every
# cue is tried at every word of the text, a third of the patterns' time.
_PERSON_CUE = re.compile(
    r"(?i:\b(?=[abcdfhiklmnprstuw])(?:my name is|name is|name\s*:|named|call me|i am|i'm|"
    r"this is|dear|hi|hello|sincerely,?|regards,?|signed,?|thanks,?|"
    r"contact|ask for|speak to|spoke (?:to|with)|under|directed by|starring|"
    r"producer|director|author|user:|kid|son|daughter|wife|husband|"
    r"friend|colleague|patient|client|customer|beneficiary|founders?:|"
    r"follow up with|meet(?:ing)? with|last name(?: is)?\??|first name(?: is)?\??))\s+"
    rf"({_NAME})",
)
_PERSON_CUE_LOWER = re.compile(
    r"(?i:\bmy name is|\bname\s*:|\bname on the account is)\s+([a-zà-öø-ÿ]+(?: [a-zà-öø-ÿ]+)?)\b"
)
_SPEAKER = re.compile(rf"(?m)^\s*({NAME_TOKEN}(?: {NAME_TOKEN})?):\s+\S")
_TITLE = re.compile(
    rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Herr|Frau|Mme|Mlle|Sr|Sra)\.?\s+({_NAME})"
)
_PAIR = re.compile(rf"(?<![\w.])({NAME_TOKEN}[ \t]+(?:{NAME_TOKEN}[ \t]+)?{NAME_TOKEN})")


# Labels and field names the tagger may mistake for a name on their own ("SSN 123-…").
_NOT_TAGGED = NOT_NAMES | frozenset(["SSN", "IBAN", "PIN", "DOB", "ID", "Tel", "Fax", "Desk"])


def _tag_ok(value: str) -> bool:
    words = [w.strip(".,:;()") for w in value.split()]
    return any(w and w not in _NOT_TAGGED and w.capitalize() not in _NOT_TAGGED for w in words)


def _one_common_word(value: str, common: frozenset[str]) -> bool:
    """A lone word such as "Review" or "JSON", that text uses as a common word, is no name."""
    words = value.split()
    if len(words) != 1:
        return False
    word = words[0].strip(".,:;()")
    return word.lower() in common or PRONOUN_I.match(word) is not None


def _name_ok(name: str) -> bool:
    words = [w.strip(".") for w in name.split()]
    return bool(words) and not all(w in NOT_NAMES for w in words) and words[0] not in NOT_NAMES


def _trim_name(name: str) -> str:
    words = name.split()
    while words and words[-1].strip(".") in NOT_NAMES:
        words.pop()
    return " ".join(words)


# A capitalised pair is taken for a name only where the tagger gives some word of it at
# least this probability of being a name, an address or an organisation: "Mount Everest",
# "Supreme Court" and "Surface Pro" are pairs the tagger reads as plain words.
PAIR_SUPPORT = 0.2


def _persons(
    text: str,
    common: frozenset[str] = frozenset(),
    support: PieceScores | None = None,
) -> Iterable[PiiMatch]:
    for pattern, score in ((_TITLE, 0.9), (_PERSON_CUE, 0.75)):
        for m in pattern.finditer(text):
            name = _trim_name(m.group(1))
            if name and _name_ok(name):
                yield PiiMatch("PERSON", m.start(1), m.start(1) + len(name), score, name)
    for m in _SPEAKER.finditer(text):
        name = m.group(1)
        # "Review:" or "Note:" heads a line like a speaker's name does, and so do the
        # labels of a form ("Desk: +41 …").
        if (
            _name_ok(name)
            and name not in _NOT_TAGGED
            and not any(w.lower() in common for w in name.split())
        ):
            yield PiiMatch("PERSON", m.start(1), m.end(1), 0.6, name)
    for m in _PERSON_CUE_LOWER.finditer(text):
        yield PiiMatch("PERSON", m.start(1), m.end(1), 0.7, m.group(1))
    for m in _PAIR.finditer(text):
        name = _trim_name(m.group(1))
        words = name.split()
        if len(words) >= 2 and _name_ok(name) and all(w not in NOT_NAMES for w in words):
            if any(w.strip(".").lower() in common for w in words):
                continue  # "To Canada", "Entertainment Weekly": a common word is no name
            end = m.start(1) + len(name)
            if support is not None and support.peak(m.start(1), end) < PAIR_SUPPORT:
                continue
            # A capitalised pair at the start of a sentence is weaker evidence.
            at_start = m.start(1) == 0 or text[max(0, m.start(1) - 2) : m.start(1)].strip() in (
                ".",
                "!",
                "?",
            )
            score = 0.5 if at_start else 0.55
            yield PiiMatch("PERSON", m.start(1), m.start(1) + len(name), score, name)


_STREET_WORDS = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    r"Square|Sq|Terrace|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Crescent|Close|Row|Walk|"
    r"Alley|Plaza|Grove|Gardens)"
)
_STREET_SUFFIX = (
    r"(?:stra(?:ß|ss)e|str\.|gasse|weg|platz|allee|ring|damm|katu|tie|kuja|vej|veien|vegen|"
    r"gata|gatan|vägen|gade|laan|straat|plein|ulica|utca|cesta|iela|gatve)"
)
_STREET_PREFIX = (
    r"(?:rue|avenue|boulevard|chemin|place|via|viale|piazza|corso|calle|avenida|carrer|rua|"
    r"travessa|plaza|paseo)"
)
_UNIT = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|P\.?\s?O\.?\s?Box)"
# Any word that makes a street of the words around it, in any of the forms above (and the
# Polish "ul.", "al.", "plac").
_STREET_WORD = re.compile(
    rf"\b{_STREET_WORDS}\b|{_STREET_SUFFIX}|\b(?:{_STREET_PREFIX}|{_UNIT}|ul|al|plac)\b",
    re.IGNORECASE,
)
# The second form's matches are one or two runs of non-space characters, each followed
# by spaces, then a digit. Looking for that shape first changes none of them, and spares
# trying every street suffix at every letter of a text with no house number in sight.
HOUSE_NUMBER_AHEAD = r"(?=\S*\s+(?:\S*\s+)?\d)"
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][\w'’.-]*\s+){{1,3}}{_STREET_WORDS}\b"
    rf"|\b{HOUSE_NUMBER_AHEAD}"
    rf"(?:[A-ZÀ-Þ][\wà-ÿ'’-]*\s+)?[A-ZÀ-Þ]?[\wà-ÿ'’-]*{_STREET_SUFFIX}\s+\d{{1,5}}[a-z]?\b"
    rf"|\b{_STREET_PREFIX}\s+(?:(?:de|du|des|la|le|del|della|dei|degli|do|da|dos)\s+)?"
    r"[\wÀ-ÿ'’-]+(?:\s+[\wÀ-ÿ'’-]+)?,?\s+\d{1,5}\b"
    r"|\b\d{1,5},?\s+(?:rue|avenue|boulevard|chemin|place|calle)\s+(?:(?:de|du|des|la|le|"
    r"del|della)\s+)?[\wÀ-ÿ'’-]+(?:\s+[\wÀ-ÿ'’-]+)?"
    rf"|\b{_UNIT}\.?\s*#?\d{{1,5}}[A-Za-z]?\b"
    r"|\bPSC \d{3,5}, Box \d{3,5}\s+APO A[AEP] \d{5}\b"
    # A ship's or a unit's military post ("USNS Ortiz\nFPO AE 44941").
    r"|\b(?:USNS|USNV|USS|USCGC)\s+[\w'’-]+\s+FPO\s+A[AEP]\s+\d{5}\b"
    r"|\bUnit \d{3,5},? Box \d{3,5}\s+DPO\s+A[AEP]\s+\d{5}\b",
    re.IGNORECASE,
)


# Polish streets: "ul. Dobra 53", "al. Jana Pawła II 12/3" (tried only where "l." or "s."
# is written: a branch of `_ADDRESS` cost every text a tenth of a millisecond).
_POLISH_STREET = re.compile(
    r"(?<!\w)(?:ul|al|os|pl)\.\s*[\wÀ-ÿ'’.-]+(?:\s+[\wÀ-ÿ'’.-]+){0,3}?\s+\d{1,5}[A-Za-z]?"
    r"(?:/\d{1,4})?\b",
    re.IGNORECASE,
)


def _addresses(text: str) -> Iterable[PiiMatch]:
    for m in _ADDRESS.finditer(text):
        yield PiiMatch("STREET_ADDRESS", m.start(), m.end(), 0.7, m.group(0))
    if "l." in text or "s." in text or "L." in text or "S." in text:
        for m in _POLISH_STREET.finditer(text):
            yield PiiMatch("STREET_ADDRESS", m.start(), m.end(), 0.7, m.group(0))


RECOGNIZERS: dict[str, Callable[[str], Iterable[PiiMatch]]] = {
    "EMAIL": _emails,
    "PHONE": _phones,
    "CREDIT_CARD": _cards,
    "IBAN": _ibans,
    "IP_ADDRESS": _ips,
    "US_SSN": _ssns,
    "UK_NINO": _ninos,
    "DRIVER_LICENSE": _licenses,
    "PERSON": _persons,
    "STREET_ADDRESS": _addresses,
    "ORGANIZATION": lambda text: (),
}
# When spans overlap, the more specific entity wins (a card number is not a phone number).
_PRIORITY = {
    e: i
    for i, e in enumerate(
        (
            "EMAIL",
            "CREDIT_CARD",
            "IBAN",
            "US_SSN",
            "UK_NINO",
            "IP_ADDRESS",
            "DRIVER_LICENSE",
            "PHONE",
            "STREET_ADDRESS",
            "PERSON",
            "ORGANIZATION",
        )
    )
}


# Every match of these recognizers' patterns holds a digit (\d): text without one skips them.
NEED_DIGIT = frozenset(
    {"PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "UK_NINO", "DRIVER_LICENSE", "STREET_ADDRESS"}
)
_DIGIT = re.compile(r"\d")


def detect(
    text: str,
    entities: Sequence[str] = ENTITIES,
    min_score: float = 0.5,
    tagger: NameTagger | None = None,
    cues: bool = True,
) -> list[PiiMatch]:
    """Non-overlapping PII spans in `text`, in order.

    With a `tagger`, names, addresses and organisations also come from the token
    classifier (and, unless `cues` is false, from the cue and shape patterns as well).
    Where spans overlap, the more specific entity keeps its span and the other keeps what
    is left of its own (so a phone inside an address hides both).
    """
    found: list[PiiMatch] = []
    has_digit = _DIGIT.search(text) is not None
    common = frozenset[str]() if tagger is None else tagger.common_words
    english = frozenset[str]() if tagger is None else tagger.english_words
    tagged: list[TaggedSpan] = []
    support: PieceScores | None = None
    if tagger is not None and TAGGED_ENTITIES.intersection(entities):
        tagged, support = tagger.tag_with_support(text)
    for entity in entities:
        if entity in NEED_DIGIT and not has_digit:
            continue
        if tagger is not None and not cues and entity in TAGGED_ENTITIES:
            continue
        matches = (
            _persons(text, common, support) if entity == "PERSON" else RECOGNIZERS[entity](text)
        )
        found.extend(m for m in matches if m.score >= min_score)
    if tagged:
        found.extend(
            PiiMatch(t.entity, t.start, t.end, t.score, text[t.start : t.end])
            for t in tagged
            if t.entity in entities
            and t.score >= min_score
            and _tag_ok(text[t.start : t.end])
            and not (t.entity == "PERSON" and _one_common_word(text[t.start : t.end], english))
        )
    found.sort(key=lambda m: (_PRIORITY[m.entity], -m.score, -(m.end - m.start)))
    taken = SpanIndex()
    for match in found:
        for piece in _uncovered(text, match, taken.overlapping(match.start, match.end)):
            if (
                piece is match
                or piece.entity not in TAGGED_ENTITIES
                or (_tag_ok(piece.value) and not _one_common_word(piece.value, english))
            ):
                taken.add(piece)
    kept = taken.spans
    kept = of_a_name(text, [m for m in kept if m.entity != "PERSON" or not not_a_person(text, m)])
    if tagger is not None:
        kept = name_columns(text, not_personal(text, kept, english), english)
    if "PERSON" in entities:
        kept = name_lists(text, sorted(kept, key=lambda m: m.start), english)
        kept = repeated_names(text, kept, english)
    kept = join_addresses(text, sorted(kept, key=lambda m: m.start))
    if tagger is None:
        return kept
    return _streetless(text, kept, english, "PERSON" in entities)


def _streetless(
    text: str, matches: list[PiiMatch], english: frozenset[str], names: bool
) -> list[PiiMatch]:
    """An address has a number or a street word. A span the tagger calls an address with
    neither ("Coimbra", "Naval", "Agent") is a town, a job or a label, or a name the tagger
    mislabelled ("Jožef Albin" on the line before his street): it is kept only where it
    passes as a name, and then as a name."""
    out, names_now = [], []
    for m in matches:
        if m.entity != "STREET_ADDRESS" or _DIGIT.search(m.value) or _STREET_WORD.search(m.value):
            out.append(m)
            continue
        name = PiiMatch("PERSON", m.start, m.end, m.score, m.value)
        if (
            names
            and _tag_ok(m.value)
            and not _one_common_word(m.value, english)
            and not not_a_person(text, name)
        ):
            names_now.append(name)
    if not names_now:
        return out
    # Judged by the context rules as the other names were ("City: Coimbra"); the spans
    # already kept went through them in `detect`.
    return sorted(out + not_personal(text, names_now, english), key=lambda m: m.start)


def _uncovered(text: str, match: PiiMatch, kept: Sequence[PiiMatch]) -> list[PiiMatch]:
    """The parts of `match` that no kept span covers, trimmed; tiny leftovers are dropped."""
    pieces = [(match.start, match.end)]
    for k in kept:
        nxt = []
        for s, e in pieces:
            if e <= k.start or s >= k.end:
                nxt.append((s, e))
                continue
            if s < k.start:
                nxt.append((s, k.start))
            if e > k.end:
                nxt.append((k.end, e))
        pieces = nxt
    if pieces == [(match.start, match.end)]:
        return [match]
    out = []
    for s, e in pieces:
        while s < e and text[s] in EDGE:
            s += 1
        while e > s and text[e - 1] in EDGE:
            e -= 1
        if sum(ch.isalnum() for ch in text[s:e]) >= 2:
            out.append(PiiMatch(match.entity, s, e, match.score, text[s:e]))
    return out


def mask(text: str, matches: Sequence[PiiMatch]) -> str:
    """Replace each match with `<ENTITY>`."""
    out: list[str] = []
    at = 0
    for m in matches:
        out.append(text[at : m.start])
        out.append(f"<{m.entity}>")
        at = m.end
    out.append(text[at:])
    return "".join(out)


class PiiScanner:
    """Finds personal data; blocks, masks (`<EMAIL>`) or anonymizes (`<EMAIL_1>`) it.

    In `anonymize` mode the placeholders and their values go to `context.vault`, shared
    by every message of the request, so the answer can be restored (`Deanonymizer`).
    """

    name = "pii"

    def __init__(
        self,
        entities: Sequence[str] = ENTITIES,
        mode: PiiMode = "anonymize",
        min_score: float = 0.5,
        model: bool = True,
        tagger: NameTagger | None = None,
    ) -> None:
        unknown = sorted(set(entities) - set(KNOWN_ENTITIES))
        if unknown:
            raise ValueError(f"unknown PII entities {unknown} (known: {', '.join(KNOWN_ENTITIES)})")
        if not isinstance(model, bool):
            raise ValueError(f"pii option 'model' must be true or false, not {model!r}")
        self.entities = tuple(entities)
        self.mode = mode
        self.min_score = min_score
        if tagger is None and model and TAGGED_ENTITIES.intersection(self.entities):
            from keel.guard.pii_tagger import shared_tagger

            tagger = shared_tagger()
        self.tagger = tagger if model else None

    def warm_up(self) -> None:
        """Load the name/address tagger now rather than on the first request."""
        if self.tagger is not None:
            self.tagger.load()

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        matches = detect(text, self.entities, self.min_score, self.tagger)
        findings = [
            Finding(
                kind=f"pii.{m.entity}",
                start=m.start,
                end=m.end,
                detail=m.entity,
                value_hash=text_hash(m.value),
                score=m.score,
            )
            for m in matches
        ]
        score = max((m.score for m in matches), default=0.0)
        action: Action = "allow"
        redacted: str | None = None
        if matches:
            if self.mode == "block":
                action = "block"
            elif self.mode == "flag":
                action = "flag"
            elif self.mode == "mask":
                action, redacted = "redact", mask(text, matches)
            else:
                vault = context.vault if context.vault is not None else Vault()
                action = "redact"
                redacted = Anonymizer(vault).anonymize(text, matches)
        return Verdict(
            scanner=self.name,
            score=score,
            action=action,
            findings=findings,
            redacted=redacted,
            latency_ms=watch.ms(),
        )
