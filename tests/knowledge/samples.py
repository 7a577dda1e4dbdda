"""Small documents of every supported format, built in memory for the tests."""

from __future__ import annotations

import io


def pdf_bytes(lines: list[str]) -> bytes:
    """A one-page PDF whose text layer holds `lines` (Helvetica, one line each)."""
    content = (
        "BT /F1 12 Tf 72 720 Td 14 TL "
        + " ".join(
            "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*"
            for line in lines
        )
        + " ET"
    )
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def docx_bytes(title: str, sections: dict[str, list[str]]) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(title, level=0)
    for heading, paragraphs in sections.items():
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


MARKDOWN = b"""# Handbook

Welcome to the team. This handbook says how we work.

## Holidays

Everyone gets 28 days of paid holiday a year.
Ask your manager two weeks ahead.

## Expenses

Keep receipts. Claims over 500 euros need a director's approval.

```
code blocks stay whole

even with blank lines
```
"""

HTML = b"""<html><head><title>Security policy</title><script>var x = 1;</script></head>
<body><nav>Home | About</nav>
<h1>Security policy</h1>
<p>Laptops must use full-disk encryption.</p>
<h2>Passwords</h2>
<ul><li><p>Use a password manager.</p></li><li>Never reuse a password.</li></ul>
</body></html>"""
