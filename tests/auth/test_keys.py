from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from keel.auth.keys import KeyService, parse_key, read_admin_key
from keel.auth.tables import ApiKey
from keel.errors import AuthenticationFailed
from keel.store import migrate
from keel.store.db import Database


@pytest.fixture
def keys(database_url: str) -> KeyService:
    database = Database(database_url)
    migrate.upgrade(database)
    return KeyService(database)


def test_first_start_creates_one_admin_key_saved_private(keys: KeyService, tmp_path: Path) -> None:
    token = keys.bootstrap_admin(tmp_path)
    assert token is not None
    assert token.startswith("keel_sk_")
    path = tmp_path / "admin.key"
    assert read_admin_key(tmp_path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A second start keeps the existing key and prints nothing new.
    assert keys.bootstrap_admin(tmp_path) is None
    assert read_admin_key(tmp_path) == token


async def test_keys_are_stored_hashed_and_verify(keys: KeyService, tmp_path: Path) -> None:
    project = keys.ensure_project()
    key_id, token = keys.create_key(project_id=project, role="app", name="svc")
    _, secret = parse_key(token) or ("", "")
    with keys._db.session() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.id == key_id)).one()
        assert secret not in (row.secret_hash, row.salt)
    principal = await keys.verify(token)  # first time: read from the database
    assert (principal.key_id, principal.project_id, principal.role) == (key_id, project, "app")
    assert keys.verify_cached(token) == principal  # then: from the cache


async def test_wrong_secret_unknown_id_and_garbage_are_rejected(keys: KeyService) -> None:
    project = keys.ensure_project()
    _key_id, token = keys.create_key(project_id=project, role="app", name="svc")
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), f"keel_sk_nosuchid_{'x' * 40}",
                "sk-openai-style", "keel_sk_", ""):  # fmt: skip
        with pytest.raises(AuthenticationFailed):
            await keys.verify(bad)


async def test_revoked_and_expired_keys_stop_working(keys: KeyService) -> None:
    project = keys.ensure_project()
    key_id, token = keys.create_key(project_id=project, role="developer", name="dev")
    await keys.verify(token)
    assert keys.revoke(key_id)
    with pytest.raises(AuthenticationFailed):
        await keys.verify(token)
    past = datetime.now(UTC) - timedelta(seconds=1)
    _, expired = keys.create_key(project_id=project, role="app", name="old", expires_at=past)
    with pytest.raises(AuthenticationFailed, match="expired"):
        await keys.verify(expired)


def test_unknown_role_is_refused(keys: KeyService) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        keys.create_key(project_id=keys.ensure_project(), role="root", name="x")
