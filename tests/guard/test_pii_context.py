"""Spans that a form's labels, a company's legal form or a document number show are no PII."""

from __future__ import annotations

from keel.guard.pii_context import name_columns, not_personal
from keel.guard.pii_spans import PiiMatch

ENGLISH = frozenset({"job", "title", "note"})


def span(text: str, value: str, entity: str = "PERSON") -> PiiMatch:
    start = text.index(value)
    return PiiMatch(entity, start, start + len(value), 0.8, value)


def kept(text: str, *spans: PiiMatch) -> list[str]:
    return [m.value for m in not_personal(text, list(spans), ENGLISH)]


def test_a_forms_label_is_no_name_but_a_speakers_name_is() -> None:
    text = "Manager: Hurks\nJob title: Drogist\nTracy: see you at six"
    found = kept(
        text,
        span(text, "Manager"),
        span(text, "Hurks"),
        span(text, "Job", "STREET_ADDRESS"),
        span(text, "Tracy"),
    )
    assert found == ["Hurks", "Tracy"]


def test_the_value_of_a_town_company_or_job_field_is_no_person() -> None:
    text = "Full name: Henny Jäckel\nCity: Hainichen\nOccupation: Drogist"
    found = kept(text, span(text, "Henny Jäckel"), span(text, "Hainichen"), span(text, "Drogist"))
    assert found == ["Henny Jäckel"]


def test_a_companys_legal_form_and_the_words_before_it_are_no_address() -> None:
    text = "Per Johansson from Holmström HB, billed by Lacombe Mathieu SARL at 12 Rue Nord"
    found = kept(
        text,
        span(text, "Per Johansson"),
        span(text, "Holmström HB", "STREET_ADDRESS"),
        span(text, "Mathieu", "STREET_ADDRESS"),
        span(text, "12 Rue Nord", "STREET_ADDRESS"),
    )
    assert found == ["Per Johansson", "12 Rue Nord"]


def test_a_number_that_names_a_document_is_no_address() -> None:
    text = "Who handled ticket 6590? The van stops at 6590 Elm"
    ticket = PiiMatch("STREET_ADDRESS", text.index("6590?"), text.index("6590?") + 5, 0.8, "")
    found = not_personal(text, [ticket, span(text, "6590 Elm", "STREET_ADDRESS")], ENGLISH)
    assert [text[m.start : m.end] for m in found] == ["6590 Elm"]


def test_other_entities_pass_untouched() -> None:
    text = "Phone: 555 0100"
    phone = span(text, "555 0100", "PHONE")
    assert not_personal(text, [phone], ENGLISH) == [phone]


def test_a_tables_header_and_its_town_and_job_columns_hold_no_names() -> None:
    text = "Applicant\tCity\tOccupation\nLeona Šimková\tNové Město\tPlánovač\nshort row"
    found = kept(
        text,
        span(text, "City\tOccupation"),
        span(text, "Leona Šimková"),
        span(text, "Město"),
        span(text, "Plánovač"),
    )
    assert found == ["Leona Šimková"]
    # A CSV row keeps a name in its name column.
    csv = "id,name,city\n12,Jana Ježková,Pec pod Sněžkou"
    assert kept(csv, span(csv, "Jana Ježková"), span(csv, "Sněžkou")) == ["Jana Ježková"]


def test_a_span_run_across_a_tables_cells_is_judged_cell_by_cell() -> None:
    text = "Applicant\tCity\tOccupation\nHartmut Fechner\tPegnitz\tKrankenschwester"
    found = kept(text, span(text, "Hartmut Fechner"), span(text, "Pegnitz\tKrankenschwester"))
    assert found == ["Hartmut Fechner"]
    # In a CSV row the name's cell stays hidden; the town's and the company's do not, and
    # the date's piece, with no letters, is no span at all.
    csv = "id,name,city,company,joined\n184,Bryan Brito,Elvas,Amorim,2002-12-15"
    assert kept(csv, span(csv, "Brito,Elvas,Amorim,2002-12-15")) == ["Brito"]


def named(text: str, *spans: PiiMatch) -> list[tuple[str, str]]:
    return [(m.value, m.entity) for m in name_columns(text, list(spans), ENGLISH)]


def test_a_name_columns_cell_is_hidden_whole_even_where_a_word_of_it_is_a_word() -> None:
    csv = "id,name,city,email\n46,April Lee,Rileytown,al@example.org\n47,Rachel May,Leeds,-"
    email = span(csv, "al@example.org", "EMAIL")
    found = named(csv, span(csv, "Lee"), email, span(csv, "Rachel"))
    # Each name cell is one name, once; the e-mail beside it is untouched.
    assert found == [
        ("April Lee", "PERSON"),
        ("al@example.org", "EMAIL"),
        ("Rachel May", "PERSON"),
    ]


def test_a_csv_row_whose_last_cell_is_empty_is_still_a_row_of_its_table() -> None:
    csv = "id,name,city,email\n46,April Lee,Rileytown,\n47,Rachel May,,\n"
    assert named(csv, span(csv, "Lee"), span(csv, "Rachel")) == [
        ("April Lee", "PERSON"),
        ("Rachel May", "PERSON"),
    ]
    # ... and its town's cell holds no name.
    assert kept(csv, span(csv, "Rileytown")) == []


def test_a_bare_name_column_beside_no_peoples_column_is_no_name_column() -> None:
    table = "id,name,price\n1,Widget Pro,9.99\n2,Anna Berg,4.50"
    # Only what the tagger found is kept: the product's cell is not made a name.
    assert named(table, span(table, "Berg")) == [("Berg", "PERSON")]
