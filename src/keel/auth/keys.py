"""API keys: `keel_sk_<id>_<secret>`, shown once, stored as a salted SHA-256 of the secret.

Verification on the hot path is a dict lookup plus one SHA-256 against an in-process
cache; the database is read (in a worker thread) only for ids this process has not seen.
Unknown ids are hashed against a dummy too, so every rejection takes the same path.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from keel.auth.tables import ApiKey, Membership, Project
from keel.errors import AuthenticationFailed
from keel.events import Change, ChangeBus
from keel.limits.spec import NO_LIMITS, NO_SCOPES, Limits, Scopes
from keel.store.db import Database
from keel.store.files import private_dir

KEY_PREFIX = "keel_sk_"
ROLES = ("admin", "developer", "viewer", "app")
DEFAULT_PROJECT = "default"
ADMIN_KEY_FILE = "admin.key"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_NEGATIVE_TTL = 10.0
TOPIC = "keys"  # change events: key "<key id>", "user:<user id>" or "*" (everything)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, its project and role, and what the key is scoped to."""

    key_id: str
    project_id: str
    role: str
    user_id: str | None = None
    scopes: Scopes = NO_SCOPES
    limits: Limits = NO_LIMITS
    ip: str | None = None  # set on control-plane calls, for the audit log

    @property
    def instance_admin(self) -> bool:
        """Admins of the default project administer every project (create, limit, disable)."""
        return self.role == "admin" and self.project_id == DEFAULT_PROJECT


@dataclass(frozen=True, slots=True)
class _CachedKey:
    salt: bytes
    secret_hash: bytes
    principal: Principal
    expires_at: float | None


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def parse_key(token: str) -> tuple[str, str] | None:
    """Split `keel_sk_<id>_<secret>` into (id, secret); None when it is not that shape."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret or len(key_id) > 32:
        return None
    return key_id, secret


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes that were stored as UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class KeyService:
    def __init__(self, database: Database, events: ChangeBus | None = None):
        self._db = database
        self._cache: dict[str, _CachedKey] = {}
        self._unknown: dict[str, float] = {}
        # Unknown ids are checked against this, so they cost the same hash as a wrong secret.
        self._dummy = _CachedKey(
            salt=secrets.token_bytes(16),
            secret_hash=secrets.token_bytes(32),
            principal=Principal(key_id="", project_id="", role=""),
            expires_at=None,
        )
        self._events = events
        if events is not None:
            events.subscribe(TOPIC, self._on_change)

    def _on_change(self, change: Change) -> None:
        # A key was revoked or changed, or a user's role changed: drop what is cached, so the
        # next request reads the database. Runs on whichever thread delivered the change.
        if change.key == "*":
            self._cache.clear()
        elif change.key.startswith("user:"):
            user_id = change.key.removeprefix("user:")
            for key_id in [k for k, e in self._cache.items() if e.principal.user_id == user_id]:
                self._cache.pop(key_id, None)
        else:
            self._cache.pop(change.key, None)
            self._unknown.pop(change.key, None)

    def changed(self, key: str, project_id: str) -> None:
        """Tell every process (this one included) that key `key` (or "user:<id>") changed."""
        self._on_change(Change(TOPIC, key, project_id))
        if self._events is not None:
            self._events.publish(Change(TOPIC, key, project_id))

    # -- control plane (call from worker threads) --------------------------------------

    def ensure_project(self, name: str = DEFAULT_PROJECT) -> str:
        with self._db.session() as session:
            project = session.scalar(select(Project).where(Project.name == name))
            if project is None:
                project = Project(id=name, name=name, created_at=_utcnow())
                session.add(project)
            return project.id

    def create_key(
        self,
        *,
        project_id: str,
        role: str,
        name: str,
        user_id: str | None = None,
        scopes: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, str]:
        """Create a key; return (key id, the full key), the latter never retrievable again."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        # Validated before they are stored: the cache reads them back with the same models.
        Scopes.model_validate(scopes or {})
        Limits.model_validate(limits or {})
        key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._db.session() as session:
            session.add(
                ApiKey(
                    id=key_id,
                    project_id=project_id,
                    user_id=user_id,
                    name=name,
                    role=role,
                    salt=salt.hex(),
                    secret_hash=_hash(salt, secret).hex(),
                    scopes=scopes or {},
                    limits=limits or {},
                    created_at=_utcnow(),
                    expires_at=expires_at,
                )
            )
        self._unknown.pop(key_id, None)
        return key_id, f"{KEY_PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> bool:
        with self._db.session() as session:
            key = session.get(ApiKey, key_id)
            if key is None or key.revoked_at is not None:
                return False
            key.revoked_at = _utcnow()
            project_id = key.project_id
        self.changed(key_id, project_id)
        return True

    def record_last_used(self, used: dict[str, datetime]) -> None:
        """Write a batch of last-used times (from the background writer, never per request)."""
        with self._db.session() as session:
            for key_id, at in used.items():
                session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))

    def has_admin_key(self, project_id: str) -> bool:
        with self._db.session() as session:
            found = session.scalar(
                select(ApiKey.id).where(
                    ApiKey.project_id == project_id,
                    ApiKey.role == "admin",
                    ApiKey.revoked_at.is_(None),
                )
            )
            return found is not None

    def bootstrap_admin(self, data_dir: Path) -> str | None:
        """On first start, create an admin key and save it (mode 0600) for the local CLI.

        Returns the new key to print once, or None when an admin key already exists.
        """
        project_id = self.ensure_project()
        if self.has_admin_key(project_id):
            return None
        _, token = self.create_key(project_id=project_id, role="admin", name="bootstrap admin")
        path = data_dir / ADMIN_KEY_FILE
        private_dir(data_dir)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return token

    def load_cache(self) -> int:
        """Read every usable key into the cache, so the first requests skip the database."""
        with self._db.session() as session:
            rows = session.execute(
                select(ApiKey, Membership.role)
                .outerjoin(
                    Membership,
                    (Membership.user_id == ApiKey.user_id)
                    & (Membership.project_id == ApiKey.project_id),
                )
                .where(ApiKey.revoked_at.is_(None))
            ).all()
            for row, member_role in rows:
                self._remember(row, member_role)
            return len(rows)

    def _remember(self, row: ApiKey, member_role: str | None = None) -> _CachedKey | None:
        # A user's key acts with the user's role in the project, and stops with the membership.
        if row.revoked_at is not None or (row.user_id is not None and member_role is None):
            self._cache.pop(row.id, None)
            return None
        entry = _CachedKey(
            salt=bytes.fromhex(row.salt),
            secret_hash=bytes.fromhex(row.secret_hash),
            principal=Principal(
                key_id=row.id,
                project_id=row.project_id,
                role=member_role if row.user_id is not None and member_role else row.role,
                user_id=row.user_id,
                scopes=Scopes.model_validate(row.scopes) if row.scopes else NO_SCOPES,
                limits=Limits.model_validate(row.limits) if row.limits else NO_LIMITS,
            ),
            expires_at=_as_timestamp(row.expires_at),
        )
        self._cache[row.id] = entry
        return entry

    def _lookup(self, key_id: str) -> _CachedKey | None:
        with self._db.session() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                return None
            member_role = None
            if row.user_id is not None:
                member_role = session.scalar(
                    select(Membership.role).where(
                        Membership.user_id == row.user_id, Membership.project_id == row.project_id
                    )
                )
            return self._remember(row, member_role)

    async def principal_of(self, key_id: str) -> Principal | None:
        """The principal of a usable key found by id alone, else None (revoked, expired,
        unknown). For callers that checked the full key once and hold a signed session."""
        entry = self._cache.get(key_id)
        if entry is None:
            entry = await asyncio.to_thread(self._lookup, key_id)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= time.time()):
            return None
        return entry.principal

    # -- hot path ----------------------------------------------------------------------

    def verify_cached(self, token: str) -> Principal | None:
        """Check a key against the cache only; None means 'not cached, ask verify()'."""
        parsed = parse_key(token)
        if parsed is None:
            raise AuthenticationFailed(_BAD_KEY)
        entry = self._cache.get(parsed[0])
        if entry is None:
            return None
        return _check(entry, parsed[1])

    async def verify(self, token: str) -> Principal:
        """Return the key's principal or raise AuthenticationFailed (401)."""
        principal = self.verify_cached(token)
        if principal is not None:
            return principal
        key_id, secret = parse_key(token) or ("", "")
        seen_missing = self._unknown.get(key_id)
        if seen_missing is not None and time.monotonic() - seen_missing < _NEGATIVE_TTL:
            _check(self._dummy, secret)  # always raises, after the same hash and compare
        entry = await asyncio.to_thread(self._lookup, key_id)
        if entry is None:
            if len(self._unknown) > 10_000:
                self._unknown.clear()
            self._unknown[key_id] = time.monotonic()
            _check(self._dummy, secret)
        return _check(entry or self._dummy, secret)


_BAD_KEY = (
    "invalid API key; send 'Authorization: Bearer keel_sk_…' with a key Keel issued "
    "(the first admin key is printed at first start and saved in the data dir as admin.key)"
)


def _check(entry: _CachedKey, secret: str) -> Principal:
    # compare_digest takes the same time wherever the first difference is; the dummy entry's
    # hash is random, so no secret matches it.
    if (
        not hmac.compare_digest(_hash(entry.salt, secret), entry.secret_hash)
        or not entry.principal.key_id
    ):
        raise AuthenticationFailed(_BAD_KEY)
    if entry.expires_at is not None and entry.expires_at <= time.time():
        raise AuthenticationFailed("this API key has expired; ask an admin for a new one")
    return entry.principal


def read_admin_key(data_dir: Path) -> str | None:
    path = data_dir / ADMIN_KEY_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
