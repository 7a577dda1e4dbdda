"""`keel kb …` against a running in-process Keel (hash embedder: these test the CLI)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from starlette.types import ASGIApp

from keel.cli.app import app
from keel.knowledge.records import KnowledgeConfig
from keel.server.app import create_app
from keel.server.openai.files import job_system
from tests.cli.test_prompts import keel
from tests.knowledge.samples import HTML, MARKDOWN
from tests.support.app import build_services
from tests.support.http import served_in_thread


@pytest.fixture
def keel_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A running in-process Keel whose job executor runs (ingestion is a job)."""
    monkeypatch.setenv("COLUMNS", "200")
    keys: list[str] = []

    async def make_app() -> ASGIApp:
        services, key = build_services(tmp_path / "data", "http://127.0.0.1:9/v1")
        keys.append(key)
        await job_system(services).start()
        return create_app(services.settings, services=services)

    with served_in_thread(make_app) as base:
        yield ["--url", base, "--key", keys[0]]


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
    assert "ingesting into handbook" in output
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


def test_a_bad_file_is_refused_by_name_and_the_rest_is_ingested(
    keel_api: list[str], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "handbook.md").write_bytes(MARKDOWN)
    (docs / "broken.pdf").write_bytes(b"<html>not a pdf</html>")
    (docs / "empty.txt").write_bytes(b"")
    assert keel("kb", "create", "handbook", *keel_api)[0] == 0
    code, output = keel("kb", "ingest", str(docs), "--kb", "handbook", *keel_api)
    assert code == 1
    assert "refused broken.pdf" in output
    assert "not a PDF" in output
    assert "refused empty.txt" in output
    assert "1 created" in output
    assert "2 file(s) not ingested" in output
    code, output = keel("kb", "search", "holiday", "--kb", "handbook", "--mode", "lexical",
                        *keel_api)  # fmt: skip
    assert "handbook.md" in output


def test_create_sets_chunking_and_fusion_and_a_bad_value_is_named(keel_api: list[str]) -> None:
    code, output = keel("kb", "create", "plain", *keel_api)
    assert code == 0, output
    assert "chunks of 200 tokens, 40 shared; fusion convex, dense weight 0.5" in output
    code, output = keel("kb", "create", "wide", "--chunk-tokens", "300", "--fusion", "rrf",
                        "--document-weight", "0.3", *keel_api)  # fmt: skip
    assert code == 0, output
    assert "chunks of 300 tokens, 40 shared; fusion rrf" in output
    assert "document weight 0.3" in output
    code, output = keel("kb", "create", "bad", "--dense-weight", "1.5", *keel_api)
    assert code == 1
    assert "400" in output
    assert "dense_weight" in output
    code, output = keel("kb", "list", *keel_api)
    assert "wide" in output
    assert "bad" not in output  # nothing half-created


def test_create_help_states_the_servers_defaults() -> None:
    # `keel kb create --help` names the defaults a base gets when an option is left out;
    # they must be the ones the server applies.
    group = typer.main.get_command(app)
    create = group.commands["kb"].commands["create"]  # type: ignore[attr-defined]
    stated = {}
    for param in create.params:
        found = re.search(r"\(default ([\w.]+)\)|(\w+) \(default\)", getattr(param, "help", ""))
        if found:
            stated[param.name] = found.group(1) or found.group(2)
    server = KnowledgeConfig()
    served: dict[str, str | float] = {
        "chunk_tokens": server.chunk_tokens,
        "overlap_tokens": server.overlap_tokens,
        "fusion": server.fusion.method,
        "dense_weight": server.fusion.dense_weight,
        "document_weight": server.fusion.document_weight,
        "feedback": server.fusion.feedback,
    }
    assert set(stated) == set(served)
    for name, value in served.items():
        assert (stated[name] if isinstance(value, str) else float(stated[name])) == value, name
