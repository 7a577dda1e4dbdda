"""What the text around a name- or address-shaped span says it is not.

A form's labels ("Employer:", "Job title:") are no names, and neither is what follows a
label for a town, a company or a job ("City: Hainichen"). A company's legal form ("A/S",
"S.L.U.", "e Filhos") is neither a name nor an address, and the capitalised words before
it name the company. `keel.guard.pii` drops such spans after the tagger and the cues.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from keel.guard.pii_spans import ORG_SUFFIX, PiiMatch, SpanIndex

# The legal forms that are abbreviations, never a word of a name: a span that ends in one
# is a company ("Zänker AG & Co. OHG", "Esteves S/A", "Kiepura Sp. z o.o. Sp.k.").
_LEGAL_ABBREVIATION = re.compile(
    r"(?<!\w)(?:Inc|Corp|Co|Ltd|LLC|LLP|PLC|GmbH|mbH|AG|SA|SAS|BV|NV|SpA|S\.p\.A|SRL|S\.r\.l|"
    r"S\.L\.U|S\.L|S\.A|S/A|S\.A\.R\.L|SARL|S\.A\.S|A/S|ApS|AB|HB|KB|Oyj?|ASA|KG|OHG|KGaA|"
    r"e\.V|Ltda|s\.r\.o|a\.s|Sp\. z o\.o|Sp\.k|Sp\.j|s\.c|Kft|Zrt|d\.o\.o|d\.d|v\.o\.s|k\.s)"
    r"\.?$"
)
# "called about invoice 4378183", "ticket number 9482326": a number that names a document.
DOCUMENT_NUMBER = re.compile(
    r"\b(?:invoice|ticket|order|reference|ref|case|tracking|booking|confirmation|policy|"
    r"receipt|serial|account|customer|member|membership|claim|shipment|parcel|id)"
    r"\W{0,4}(?:(?:number|no|nr|id)\b\W{0,4}|#\s?)?(?:is\W{0,4})?$",
    re.IGNORECASE,
)
_LEGAL_FORM = re.compile(rf"(?<!\w){ORG_SUFFIX}\.?(?!\w)")
_FORM_AFTER = re.compile(rf"[ \t]+(?:&[ \t]+\w+[ \t]+)?{ORG_SUFFIX}\.?(?!\w)")
_DIGIT = re.compile(r"\d")
_NUMBER_ONLY = re.compile(r"[\d\W]+")

# Words of a form's labels that the English word list lacks ("Employer:", "Job title:").
_FORM_WORDS = frozenset(
    """name full first last middle given family surname maiden employer company job title
    occupation position role department street address line city town state county country
    region province zip postcode postal code phone mobile tel telephone fax email e-mail
    website date birth dob start end joined id customer client account applicant contact
    emergency employee manager agent user assistant note notes subject ref reference status
    type age gender nationality""".split()  # noqa: SIM905
)
# A label that opens a line of a form, and the value after it.
_LABEL = re.compile(r"(?m)^[ \t>|]*([^\W\d_][^\W\d_ .'/-]*(?:[ .'/-][^\W\d_]+){0,3})[ \t]*:")
# Labels of a field (or a table's column) that holds a town, a company or a job: no person.
_NOT_A_PERSON_LABEL = (
    r"(?:city|town|village|country|state|region|province|county|company|employer|"
    r"organi[sz]ation|business|firm|job(?:[ \t]title)?|occupation|position|profession|"
    r"department|title|role)"
)
_NOT_A_PERSON_FIELD = re.compile(rf"(?im)^[ \t>|]*{_NOT_A_PERSON_LABEL}[ \t]*:[ \t]*([^\n]*)")
_NOT_A_PERSON_COLUMN = re.compile(_NOT_A_PERSON_LABEL, re.IGNORECASE)
# A table's column of people's names. A bare "name" column may hold products or files as
# well: it counts only beside a column that only people have ("email", "city", "joined").
_NAME_COLUMN = re.compile(
    r"(?:full[ _]?|first[ _]?|last[ _]?|given[ _]?|family[ _]?|sur|customer[ _]?|client[ _]?|"
    r"contact[ _]?|employee[ _]?|patient[ _]?)name|applicant|customer|client|employee|"
    r"patient|contact|person|recipient",
    re.IGNORECASE,
)
_BARE_NAME_COLUMN = re.compile(r"name|nombre|nom|nome|navn|namn|naam", re.IGNORECASE)
_PEOPLE_COLUMN = re.compile(
    r"e-?mail|phone|mobile|city|town|address|street|company|employer|dob|birth[ _]?date|"
    r"date[ _]of[ _]birth|age|gender|job|occupation|title|department|joined|hired|country",
    re.IGNORECASE,
)


_ANY_NAME_COLUMN = re.compile(f"{_NAME_COLUMN.pattern}|{_BARE_NAME_COLUMN.pattern}", re.IGNORECASE)


def _name_column(columns: Sequence[str]) -> re.Pattern[str]:
    """The pattern a name column's label matches in this table's header."""
    if any(_PEOPLE_COLUMN.fullmatch(_label_of(c)) for c in columns):
        return _ANY_NAME_COLUMN
    return _NAME_COLUMN


def _label_of(column: str) -> str:
    return column.strip().lstrip(" \t>|")


_CHECKED = ("PERSON", "STREET_ADDRESS")
# Between the fields of a table row: a tab, or a comma with no space after it (CSV).
_FIELD_BREAK = re.compile(r"\t|,(?=\S)")
# The first line of a table, with two fields or more: its header, if every field is a label.
_HEADER = re.compile(r"[^\n]*(?:\t|,(?=\S))[^\n]*")


def _within(ranges: Sequence[tuple[int, int]], spans: Iterable[PiiMatch]) -> Iterator[PiiMatch]:
    """The spans that lie inside one of `ranges` (in order, not overlapping): a bisection
    per span, so a long table costs no more than its length."""
    starts = [start for start, _ in ranges]
    for m in spans:
        i = bisect_right(starts, m.start) - 1
        if i >= 0 and m.end <= ranges[i][1]:
            yield m


def _column_cells(
    text: str, columns: Sequence[str], body: int, label: re.Pattern[str]
) -> list[tuple[int, int]]:
    """The cells of the rows below a header that fall in a column whose label `label`
    matches (a town, company or job column; a name column)."""
    place = [bool(label.fullmatch(_label_of(c))) for c in columns]
    if not any(place):
        return []
    out = []
    for row in re.finditer(r"[^\n]+", text[body:]):
        start, cells = body + row.start(), []
        for brk in _FIELD_BREAK.finditer(text, start, body + row.end()):
            cells.append((start, brk.start()))
            start = brk.end()
        cells.append((start, body + row.end()))
        if len(cells) == len(columns) - 1 and text[body + row.end() - 1] == ",":
            cells[-1] = (start, body + row.end() - 1)  # a CSV row whose last cell is empty
            cells.append((body + row.end(), body + row.end()))
        if len(cells) == len(columns):  # else not a row of this table
            out += [cell for cell, is_place in zip(cells, place, strict=True) if is_place]
    return out


def _cells_of(text: str, match: PiiMatch, body: int) -> list[PiiMatch]:
    """`match` cut at a table's field breaks, below its header; pieces without two letters
    (a date, a comma) are dropped."""
    if match.start < body or not _FIELD_BREAK.search(text, match.start, match.end):
        return [match]
    out, start = [], match.start
    for brk in [*_FIELD_BREAK.finditer(text, match.start, match.end), None]:
        end = brk.start() if brk else match.end
        if cell := _cell(text, start, end, " .,;:"):
            first, value = cell
            out.append(replace(match, start=first, end=first + len(value), value=value))
        start = brk.end() if brk else end
    return out


def _cell(text: str, start: int, end: int, edge: str) -> tuple[int, str] | None:
    """Where text[start:end] starts and what it holds, `edge` trimmed off its ends; None
    where that holds fewer than two letters (a date, a comma, nothing)."""
    value = text[start:end].strip(edge)
    if sum(ch.isalpha() for ch in value) < 2:
        return None
    return text.index(value, start), value


def name_columns(text: str, matches: list[PiiMatch], english: frozenset[str]) -> list[PiiMatch]:
    """`matches` (in order, not overlapping) with each cell of a table's name column as one
    name, whole: "April Lee", where the tagger found "Lee" alone, "April" being a word. The
    names and addresses found inside such a cell give way to it; a cell that holds another
    finding (an e-mail) keeps its findings instead."""
    table = _table(text, english)
    if table is None or not any(m.entity == "PERSON" for m in matches):
        return matches
    body, columns = table
    cells = _column_cells(text, columns, body, _name_column(columns))
    names = _name_cells(text, cells)
    if not names:
        return matches
    inside = {id(m) for m in _within(cells, matches) if m.entity in _CHECKED}
    kept = [m for m in matches if id(m) not in inside]
    taken = SpanIndex(kept)
    return sorted(kept + [c for c in names if not taken.overlapping(c.start, c.end)],
                  key=lambda m: m.start)  # fmt: skip


def _name_cells(text: str, cells: Sequence[tuple[int, int]]) -> list[PiiMatch]:
    """A name column's cells with two letters or more, as names (their edges trimmed)."""
    out = []
    for start, end in cells:
        if cell := _cell(text, start, end, " \t\"'"):
            first, value = cell
            out.append(PiiMatch("PERSON", first, first + len(value), 0.9, value))
    return out


def _table(text: str, english: frozenset[str]) -> tuple[int, list[str]] | None:
    """Where a table's rows begin and its columns, if the text's first line is a header
    (two fields or more, every one a label); else None."""
    header = _HEADER.match(text)
    if header is None:
        return None
    columns = _FIELD_BREAK.split(header.group(0))
    if not all(_is_label(c.split(), english) for c in columns):
        return None
    return header.end(), columns


def _is_label(words: Sequence[str], english: frozenset[str]) -> bool:
    return bool(words) and all(
        w.lower().strip(".'") in english or w.lower() in _FORM_WORDS for w in words
    )


def not_personal(text: str, matches: Sequence[PiiMatch], english: frozenset[str]) -> list[PiiMatch]:
    """`matches` less the names and addresses that context shows are something else."""
    if not any(m.entity in _CHECKED for m in matches):
        return list(matches)
    others = [m for m in matches if m.entity not in _CHECKED]
    tagged = [m for m in matches if m.entity in _CHECKED]
    persons = [m for m in tagged if m.entity == "PERSON"]
    # "Employer:" and "Job title:" are words; a speaker's name ("Tracy:") is not.
    labels = [(m.start(1), m.end(1)) for m in _LABEL.finditer(text)
              if _is_label(m.group(1).split(), english)]  # fmt: skip
    drop = {id(m) for m in _within(labels, tagged)}
    table = _table(text, english)
    if table is not None:
        body, columns = table
        # A name or an address stays in its cell: a span run across cells
        # ("Pegnitz\tKrankenschwester", "Frankfurt,Burns-Johnson,1972-06-23") is judged cell
        # by cell (an address's pieces with no number go on to be judged as names).
        tagged = [piece for m in tagged for piece in _cells_of(text, m, body)]
        persons = [m for m in tagged if m.entity == "PERSON"]
        drop.update(id(m) for m in tagged if m.end <= body)  # "Applicant\tCity\t…"
        places = _column_cells(text, columns, body, _NOT_A_PERSON_COLUMN)
        drop.update(id(m) for m in _within(places, persons))
    fields = [m.span(1) for m in _NOT_A_PERSON_FIELD.finditer(text)]
    drop.update(id(m) for m in _within(fields, persons))
    for m in tagged:
        value = text[m.start : m.end]
        if m.entity == "STREET_ADDRESS" and _NUMBER_ONLY.fullmatch(value):
            if DOCUMENT_NUMBER.search(text, max(0, m.start - 40), m.start):
                drop.add(id(m))  # "ticket 6590?"
        elif m.entity == "STREET_ADDRESS" and not _DIGIT.search(value):
            form = _LEGAL_FORM.search(value)
            if form and form.end() >= len(value.rstrip(" .,;")):
                drop.add(id(m))  # "Holmström HB", "A/S", "Norte S.L.U."
            elif _FORM_AFTER.match(text, m.end):
                drop.add(id(m))  # "Mathieu" in "Lacombe Mathieu SARL"
        elif m.entity == "PERSON" and (
            _LEGAL_FORM.fullmatch(value.strip(" .,;"))  # "SARL" alone
            # on one line: a name above a company's line ("Jane Hilbert\nWilson Inc") stays
            or ("\n" not in value and _LEGAL_ABBREVIATION.search(value.rstrip(" ,;")))
        ):
            drop.add(id(m))
    kept = others + [m for m in tagged if id(m) not in drop]
    return sorted(kept, key=lambda m: m.start)
