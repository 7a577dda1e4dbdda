import json

import pytest

from keel.knowledge.parse import DocumentError, parse
from tests.knowledge.samples import HTML, MARKDOWN, docx_bytes, pdf_bytes


def test_markdown_headings_become_the_path_of_the_text_under_them() -> None:
    [document] = parse("handbook.md", MARKDOWN)
    holiday = next(b for b in document.blocks if "28 days" in b.text)
    assert holiday.heading_path == ("Handbook", "Holidays")
    assert document.text[holiday.start : holiday.end] == holiday.text
    assert document.title == "Handbook"
    code = next(b for b in document.blocks if "code blocks" in b.text)
    assert "even with blank lines" in code.text


def test_html_reads_headings_and_paragraphs_but_not_scripts_or_navigation() -> None:
    [document] = parse("policy.html", HTML)
    assert document.title == "Security policy"
    assert "var x" not in document.text
    assert "Home | About" not in document.text
    manager = next(b for b in document.blocks if "password manager" in b.text)
    assert manager.heading_path == ("Security policy", "Passwords")
    assert document.text.count("password manager") == 1  # <p> inside <li> read once


def test_pdf_text_is_extracted() -> None:
    [document] = parse(
        "report.pdf", pdf_bytes(["Quarterly revenue grew 12 percent.", "Costs fell."])
    )
    assert "Quarterly revenue grew 12 percent." in document.text
    assert document.media_type == "application/pdf"


def test_docx_headings_and_title_are_kept() -> None:
    data = docx_bytes("Onboarding", {"First week": ["Meet your buddy on Monday."]})
    [document] = parse("onboarding.docx", data)
    assert document.title == "Onboarding"
    buddy = next(b for b in document.blocks if "buddy" in b.text)
    assert buddy.heading_path == ("Onboarding", "First week")


def test_each_jsonl_row_is_a_document_with_its_fields_as_metadata() -> None:
    rows = [
        {"_id": "7", "title": "Aspirin", "text": "Aspirin lowers fever.", "year": 2020},
        {"_id": "8", "title": "Ibuprofen", "text": "Ibuprofen reduces pain.", "year": 2021},
    ]
    data = "\n".join(json.dumps(row) for row in rows).encode()
    documents = parse("drugs.jsonl", data)
    assert [d.source for d in documents] == ["drugs.jsonl#7", "drugs.jsonl#8"]
    assert documents[0].metadata == {"_id": "7", "year": 2020}
    assert documents[1].title == "Ibuprofen"


def test_csv_rows_without_a_text_column_are_read_field_by_field() -> None:
    documents = parse("people.csv", b"name,team,room\nAda,Core,12\nGrace,Infra,14\n")
    assert [d.source for d in documents] == ["people.csv#2", "people.csv#3"]
    assert "team: Infra" in documents[1].text


@pytest.mark.parametrize(
    ("source", "data", "cause"),
    [
        ("notes.txt", b"   \n", "empty"),
        ("slides.pptx", b"PK\x03\x04", "unsupported document type"),
        ("fake.pdf", b"<html>not a pdf</html>", "not a PDF"),
        ("broken.pdf", b"%PDF-1.4\ngarbage", "damaged PDF"),
        ("fake.docx", b"just text", "not a .docx"),
        ("bad.jsonl", b'{"text": "ok"}\nnot json\n', "line 2 is not JSON"),
    ],
)
def test_bad_documents_are_refused_with_the_cause(source: str, data: bytes, cause: str) -> None:
    with pytest.raises(DocumentError, match=cause) as raised:
        parse(source, data)
    assert raised.value.status == 400
