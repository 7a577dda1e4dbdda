from __future__ import annotations

import hmac
import secrets
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from keel.auth import keys as keys_module
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


async def test_a_thousand_random_keys_are_all_rejected(keys: KeyService) -> None:
    project = keys.ensure_project()
    real_id, _ = keys.create_key(project_id=project, role="admin", name="target")
    accepted = 0
    for n in range(1000):
        # Half guess ids, half guess the secret of a real id.
        key_id = real_id if n % 2 else secrets.token_hex(6)
        try:
            await keys.verify(f"keel_sk_{key_id}_{secrets.token_urlsafe(32)}")
        except AuthenticationFailed:
            continue
        accepted += 1
    assert accepted == 0


async def test_unknown_ids_take_the_same_hash_and_compare_as_wrong_secrets(
    keys: KeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = keys.ensure_project()
    real_id, _ = keys.create_key(project_id=project, role="app", name="svc")
    calls: list[str] = []
    real_hash, real_compare = keys_module._hash, hmac.compare_digest

    def counting_hash(salt: bytes, secret: str) -> bytes:
        calls.append("hash")
        return real_hash(salt, secret)

    def counting_compare(a: bytes, b: bytes) -> bool:
        calls.append("compare")
        return real_compare(a, b)

    monkeypatch.setattr(keys_module, "_hash", counting_hash)
    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting_compare)
    for token in (
        f"keel_sk_{real_id}_{'w' * 43}",  # a known id, a wrong secret
        f"keel_sk_nosuchid_{'w' * 43}",  # an unknown id, read from the database
        f"keel_sk_nosuchid_{'w' * 43}",  # the same unknown id, now remembered as unknown
    ):
        calls.clear()
        with pytest.raises(AuthenticationFailed, match="invalid API key"):
            await keys.verify(token)
        assert calls == ["hash", "compare"], token
