"""Documents in, plain text with its structure out: headings and paragraphs with offsets.

One parser per format (.txt .md .html .pdf .docx, and .jsonl/.csv whose rows are documents
of their own). A file that is not what its name says, or holds no text, is refused with
the cause; nothing of it is stored.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from keel.errors import InvalidRequest

MEDIA_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".jsonl": "application/jsonl",
    ".csv": "text/csv",
}
SUPPORTED = ", ".join(sorted(MEDIA_TYPES))
TEXT_FIELDS = ("text", "content", "body", "page_content", "abstract", "passage")
TITLE_FIELDS = ("title", "name", "heading", "subject")
ID_FIELDS = ("_id", "id", "doc_id", "uuid")


class DocumentError(InvalidRequest):
    """A document Keel cannot read: wrong type, damaged, or empty (400, names the cause)."""

    def __init__(self, message: str, code: str = "invalid_document"):
        super().__init__(message, param="file", code=code)


@dataclass(frozen=True)
class Block:
    """A heading or a paragraph; `start`/`end` index the document's `text`."""

    text: str
    start: int
    end: int
    heading_path: tuple[str, ...]
    heading_level: int = 0  # 1-6 for a heading, 0 for body text


@dataclass
class ParsedDocument:
    source: str
    media_type: str
    text: str
    blocks: list[Block]
    metadata: dict[str, Any] = field(default_factory=dict)
    title: str | None = None


class _Builder:
    """Joins headings and paragraphs into one text, keeping each block's offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.blocks: list[Block] = []
        self.length = 0
        self.path: list[tuple[int, str]] = []

    def heading(self, level: int, text: str) -> None:
        text = _clean(text)
        if not text:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        self._add(text, level)

    def paragraph(self, text: str) -> None:
        text = _clean(text)
        if text:
            self._add(text, 0)

    def _add(self, text: str, level: int) -> None:
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        start = self.length
        self.parts.append(text)
        self.length += len(text)
        heading_path = tuple(name for _, name in self.path)
        self.blocks.append(Block(text, start, self.length, heading_path, level))

    def build(self, source: str, media_type: str, **extra: Any) -> ParsedDocument:
        return ParsedDocument(source, media_type, "".join(self.parts), self.blocks, **extra)


_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


def _clean(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def media_type_of(source: str, declared: str | None = None) -> str:
    suffix = PurePosixPath(source.lower()).suffix
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    base = (declared or "").split(";")[0].strip().lower()
    if base in MEDIA_TYPES.values():
        return base
    raise DocumentError(
        f"unsupported document type for {source!r} ({suffix or 'no extension'}); "
        f"supported: {SUPPORTED}",
        code="unsupported_media_type",
    )


def _decode(data: bytes, source: str) -> str:
    if b"\x00" in data[:4096]:
        raise DocumentError(f"{source!r} is binary, not text; give it the extension of its format")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _plain(source: str, data: bytes) -> ParsedDocument:
    builder = _Builder()
    for paragraph in re.split(r"\n\s*\n", _decode(data, source)):
        builder.paragraph(paragraph)
    return builder.build(source, "text/plain")


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown(source: str, data: bytes) -> ParsedDocument:
    builder = _Builder()
    paragraph: list[str] = []
    fenced = False

    def flush() -> None:
        builder.paragraph("\n".join(paragraph))
        paragraph.clear()

    for line in _decode(data, source).splitlines():
        if _MD_FENCE.match(line):
            fenced = not fenced
            paragraph.append(line)
            if not fenced:  # a code block stays one paragraph
                flush()
            continue
        heading = None if fenced else _MD_HEADING.match(line)
        if heading:
            flush()
            builder.heading(len(heading.group(1)), heading.group(2))
        elif not line.strip() and not fenced:
            flush()
        else:
            paragraph.append(line)
    flush()
    return builder.build(source, "text/markdown", title=_first_heading(builder))


_HTML_BLOCKS = "h1,h2,h3,h4,h5,h6,p,li,pre,blockquote,td,th,dt,dd,figcaption,caption"
_HTML_BLOCK_TAGS = frozenset(_HTML_BLOCKS.split(","))


def _html(source: str, data: bytes) -> ParsedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode(data, source))
    for node in tree.css("script,style,noscript,template,nav,svg"):
        node.decompose()
    builder = _Builder()
    title_node = tree.css_first("title")
    title = _clean(title_node.text()) if title_node is not None else None
    root = tree.body or tree.root
    found = False
    if root is not None:
        for node in root.css(_HTML_BLOCKS):
            parent = node.parent
            nested = False
            while parent is not None:  # a <p> inside an <li> is read once, with the <li>
                if parent.tag in _HTML_BLOCK_TAGS:
                    nested = True
                    break
                parent = parent.parent
            if nested:
                continue
            found = True
            text = node.text(separator=" " if node.tag != "pre" else "")
            if node.tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                builder.heading(int(node.tag[1]), text)
            else:
                builder.paragraph(text)
        if not found:  # a page of bare text in divs
            for paragraph in re.split(r"\n\s*\n", root.text(separator="\n")):
                builder.paragraph(paragraph)
    return builder.build(source, "text/html", title=title or _first_heading(builder))


def _pdf(source: str, data: bytes) -> ParsedDocument:
    if not data.lstrip()[:5] == b"%PDF-":
        raise DocumentError(f"{source!r} is not a PDF (it does not start with %PDF-)")
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    builder = _Builder()
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(f"{source!r} is an encrypted PDF; upload it decrypted")
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            for paragraph in re.split(r"\n\s*\n", text):
                builder.paragraph(paragraph)
            del number
        title = reader.metadata.title if reader.metadata is not None else None
    except DocumentError:
        raise
    except (PyPdfError, Exception) as exc:  # any parser failure on uploaded bytes is a 400
        raise DocumentError(
            f"{source!r} is a damaged PDF ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    return builder.build(source, "application/pdf", title=title or None)


def _docx(source: str, data: bytes) -> ParsedDocument:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise DocumentError(f"{source!r} is not a .docx file (not a zip archive)")
    try:
        return _docx_read(source, data)
    except Exception as exc:  # any parser failure on uploaded bytes is a 400
        raise DocumentError(
            f"{source!r} is not a readable .docx file ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def _docx_read(source: str, data: bytes) -> ParsedDocument:
    import docx

    document = docx.Document(io.BytesIO(data))
    builder = _Builder()
    title = document.core_properties.title or None
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style == "Title":
            builder.heading(1, paragraph.text)
            title = title or paragraph.text
        elif style.startswith("Heading"):
            level = style.removeprefix("Heading").strip()
            # One below the Title, which sits at level 1.
            builder.heading((int(level) if level.isdigit() else 1) + 1, paragraph.text)
        else:
            builder.paragraph(paragraph.text)
    for table in document.tables:
        for row in table.rows:
            builder.paragraph(" | ".join(cell.text for cell in row.cells))
    return builder.build(
        source,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        title=title,
    )


def _row_document(
    source: str, media_type: str, number: int, row: dict[str, Any]
) -> ParsedDocument | None:
    lowered = {str(key).lower(): key for key in row}
    text_key = next((lowered[name] for name in TEXT_FIELDS if name in lowered), None)
    title_key = next((lowered[name] for name in TITLE_FIELDS if name in lowered), None)
    id_key = next((lowered[name] for name in ID_FIELDS if name in lowered), None)
    row_id = str(row[id_key]) if id_key is not None and row[id_key] not in (None, "") else None
    metadata = {
        str(key): value
        for key, value in row.items()
        if key not in (text_key, title_key) and isinstance(value, str | int | float | bool)
    }
    builder = _Builder()
    title = str(row[title_key]).strip() if title_key is not None and row[title_key] else None
    if title:
        builder.heading(1, title)
    if text_key is not None:
        builder.paragraph(str(row[text_key] or ""))
    else:  # no text column: every other field, named
        for key, value in metadata.items():
            if key != id_key:
                builder.paragraph(f"{key}: {value}")
    if not any(block.heading_level == 0 for block in builder.blocks) and not title:
        return None
    name = f"{source}#{row_id if row_id is not None else number}"
    return builder.build(name, media_type, metadata=metadata, title=title)


def _rows(
    source: str, media_type: str, rows: Iterable[tuple[int, dict[str, Any]]]
) -> list[ParsedDocument]:
    found = [_row_document(source, media_type, number, row) for number, row in rows]
    return [document for document in found if document is not None]


def _jsonl(source: str, data: bytes) -> list[ParsedDocument]:
    def rows() -> Iterable[tuple[int, dict[str, Any]]]:
        for number, line in enumerate(_decode(data, source).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DocumentError(f"{source!r} line {number} is not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DocumentError(f"{source!r} line {number} is not a JSON object")
            yield number, row

    return _rows(source, "application/jsonl", rows())


def _csv(source: str, data: bytes) -> list[ParsedDocument]:
    text = _decode(data, source)
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(number, dict(row)) for number, row in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise DocumentError(f"{source!r} is not valid CSV ({exc})") from exc
    return _rows(source, "text/csv", rows)


def _first_heading(builder: _Builder) -> str | None:
    return next((block.text for block in builder.blocks if block.heading_level), None)


_SINGLE: dict[str, Callable[[str, bytes], ParsedDocument]] = {
    "text/plain": _plain,
    "text/markdown": _markdown,
    "text/html": _html,
    "application/pdf": _pdf,
    MEDIA_TYPES[".docx"]: _docx,
}
_MANY: dict[str, Callable[[str, bytes], list[ParsedDocument]]] = {
    "application/jsonl": _jsonl,
    "text/csv": _csv,
}


def parse(source: str, data: bytes, declared_type: str | None = None) -> list[ParsedDocument]:
    """The documents in one file: one, or one per row of a .jsonl/.csv file.

    Raises DocumentError (400) for an unsupported type, a damaged file, or no text at all.
    """
    media_type = media_type_of(source, declared_type)
    if not data.strip():
        raise DocumentError(f"{source!r} is empty; nothing to ingest", code="empty_document")
    if media_type in _MANY:
        documents = _MANY[media_type](source, data)
    else:
        documents = [_SINGLE[media_type](source, data)]
    documents = [document for document in documents if document.text.strip()]
    if not documents:
        raise DocumentError(
            f"{source!r} holds no text Keel can read (a scanned PDF needs OCR first)",
            code="empty_document",
        )
    return documents
