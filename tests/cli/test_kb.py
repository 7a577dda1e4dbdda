"""`keel kb …` against a running in-process Keel (hash embedder: these test the CLI)."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_keys import keel_api
from tests.cli.test_prompts import keel
from tests.knowledge.samples import HTML, MARKDOWN

__all__ = ["keel_api"]  # the fixture, used by name


def test_create_ingest_a_folder_resume_search_and_delete(
    keel_api: list[str], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    (docs / "policies").mkdir(parents=True)
    (docs / "handbook.md").write_bytes(MARKDOWN)
    (docs / "policies" / "security.html").write_bytes(HTML)
    (docs / "notes.bin").write_bytes(b"\x00\x01")  # not a supported type: left out
    code, output = keel("kb", "create", "handbook", *keel_api)
    assert code == 0, output
    code, output = keel("kb", "ingest", str(docs), "--kb", "handbook", *keel_api)
    assert code == 0, output
    assert "2 created, 0 updated, 0 unchanged" in output
    code, output = keel("kb", "ingest", str(docs), "--kb", "handbook", *keel_api)
    assert code == 0, output
    assert "0 created, 0 updated, 2 unchanged; 0 chunks embedded" in output
    code, output = keel("kb", "search", "password manager", "--kb", "handbook",
                        "--mode", "lexical", *keel_api)  # fmt: skip
    assert code == 0, output
    assert "policies/security.html" in output
    code, output = keel("kb", "list", *keel_api)
    assert code == 0, output
    assert "handbook" in output
    code, output = keel("kb", "delete", "handbook", "--document", "handbook.md", *keel_api)
    assert code == 0, output
    code, output = keel("kb", "delete", "handbook", "--yes", *keel_api)
    assert code == 0, output
    code, output = keel("kb", "search", "x", "--kb", "handbook", *keel_api)
    assert code == 1
    assert "unknown knowledge base 'handbook'" in output
