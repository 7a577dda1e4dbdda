"""Keel's data dir and the files in it (database, WAL, keys, spill files) are private to the
user that runs Keel, whatever the umask: they hold prompts, answers and secrets."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from keel.deploy.llamacpp import free_port
from keel.store import migrate
from keel.store.db import Database
from keel.store.files import private_dir, private_file
from tests.support.keel_process import start_keel
from tests.support.stub_server import StubProcess


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask, under which new files are 0644: world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def loose(root: Path) -> dict[str, str]:
    """Everything under `root` (and root) that group or others may use, with its mode."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if mode(path) & 0o077:
            found[str(path.relative_to(root))] = oct(mode(path))
    return found


@pytest.mark.usefixtures("loose_umask")
def test_the_sqlite_database_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "keel.db"
    database = Database(f"sqlite:///{path}")
    try:
        migrate.upgrade(database)
        with database.session() as session:  # a write, so the WAL and its index exist
            session.execute(text("CREATE TABLE probe (x TEXT)"))
            session.execute(text("INSERT INTO probe VALUES ('a prompt')"))
        companions = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in companions)
        assert mode(path.parent) == 0o700
        assert {p.name: oct(mode(p)) for p in [path, *companions]} == {
            "keel.db": "0o600", "keel.db-wal": "0o600", "keel.db-shm": "0o600"
        }  # fmt: skip
    finally:
        database.dispose()


@pytest.mark.usefixtures("loose_umask")
def test_a_database_left_readable_by_an_earlier_version_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"
    Database(f"sqlite:///{path}").dispose()
    path.chmod(0o644)
    Database(f"sqlite:///{path}").dispose()
    assert mode(path) == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_private_dir_and_file_create_and_tighten(tmp_path: Path) -> None:
    made = tmp_path / "a" / "data"
    private_dir(made)
    assert mode(made) == 0o700
    made.chmod(0o755)
    private_dir(made)
    assert mode(made) == 0o700
    secret = made / "f"
    private_file(secret)
    assert mode(secret) == 0o600
    secret.chmod(0o664)
    private_file(secret)
    assert mode(secret) == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_a_serving_keel_keeps_everything_it_writes_private(tmp_path: Path) -> None:
    stub = StubProcess("stub", free_port()).start()
    upstreams = f'[{{"name": "stub", "base_url": "{stub.base_url}", "models": ["m"]}}]'
    env = {"KEEL_UPSTREAMS": upstreams, "KEEL_TRACE_FLUSH_INTERVAL": "0.05"}
    keel = start_keel(tmp_path / "data", "--no-local-model", "--no-embeddings", env=env)
    try:
        headers = {"Authorization": f"Bearer {keel.api_key}"}
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(
            f"{keel.base_url}/v1/chat/completions", headers=headers, json=chat, timeout=30
        )
        assert answer.status_code == 200, answer.text
        trace = f"{keel.base_url}/api/traces/{answer.headers['x-keel-trace-id']}"
        deadline = time.monotonic() + 30
        while httpx.get(trace, headers=headers, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the trace was not stored"
            time.sleep(0.05)
        data_dir = tmp_path / "data"
        assert (data_dir / "keel.db-wal").exists()
        assert loose(data_dir) == {}
    finally:
        keel.stop()
        stub.stop()
