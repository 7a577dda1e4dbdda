from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.auth.keys import KeyService
from keel.deploy.bundled import minilm_dir
from keel.embeddings.local import LocalEmbedder
from keel.knowledge.chunk import tokenizer_counter
from keel.knowledge.service import KnowledgeBases
from keel.store import migrate
from keel.store.db import Database


@pytest.fixture(scope="session")
def minilm() -> Iterator[LocalEmbedder]:
    """The real bundled MiniLM, loaded once for the knowledge tests."""
    embedder = LocalEmbedder("all-minilm-l6-v2", minilm_dir())
    yield embedder
    embedder.close()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'keel.db'}")
    migrate.upgrade(database)
    KeyService(database).ensure_project("default")
    yield database
    database.dispose()


@pytest.fixture
def kbs(database: Database, tmp_path: Path, minilm: LocalEmbedder) -> KnowledgeBases:
    counter = tokenizer_counter(minilm_dir() / "tokenizer.json")
    return KnowledgeBases(database, tmp_path / "data", lambda: minilm, counter)
