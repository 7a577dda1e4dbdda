"""Projects, users, memberships and API keys as the control plane manages them.

Synchronous (call it from worker threads). Every change writes its audit row in the same
transaction; key, membership and limit changes then publish a change event.
"""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keel.auth import audit
from keel.auth.keys import DEFAULT_PROJECT, KEY_PREFIX, ROLES, KeyService, Principal
from keel.auth.tables import ApiKey, Membership, Project, User
from keel.errors import InvalidRequest, NotFound, PermissionDenied
from keel.events import Change, ChangeBus
from keel.limits.spec import NO_PROJECT_LIMITS, Limits, ProjectLimits, Scopes
from keel.store.db import Database

PROJECTS_TOPIC = "projects"  # change events: a project's limits changed, or it was disabled
Role = Literal["admin", "developer", "viewer", "app"]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes that were stored as UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


class ProjectSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Ident = Field(description="Project name, also its id.")
    limits: ProjectLimits = Field(default_factory=ProjectLimits)


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Ident = Field(description="Unique user name.")
    email: str | None = Field(None, max_length=320)
    role: Role = Field("developer", description="The user's role in the project.")


class MembershipSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("api key", min_length=1, max_length=200)
    role: Role | None = Field(
        None, description="Service keys: the key's role (default app). User keys take the user's."
    )
    user_id: str | None = Field(None, max_length=64, description="Make a key of this user.")
    scopes: Scopes = Field(default_factory=Scopes)
    limits: Limits = Field(default_factory=Limits)
    expires_in_days: float | None = Field(None, gt=0, le=3650)


def project_view(row: Project) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "limits": row.limits or {},
        "created_at": _iso(row.created_at),
        "disabled_at": _iso(row.disabled_at),
    }


def user_view(row: User, role: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "email": row.email,
        "role": role,
        "created_at": _iso(row.created_at),
    }


def key_view(row: ApiKey, role: str | None = None) -> dict[str, Any]:
    """What the API shows of a key: never the secret, its hash or its salt."""
    return {
        "id": row.id,
        "name": row.name,
        "project_id": row.project_id,
        "user_id": row.user_id,
        "role": role or row.role,
        "prefix": f"{KEY_PREFIX}{row.id}_",
        "scopes": row.scopes or {},
        "limits": row.limits or {},
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        "revoked_at": _iso(row.revoked_at),
        "last_used_at": _iso(row.last_used_at),
    }


def _no_project(project_id: str) -> NotFound:
    return NotFound(f"no project {project_id!r}; list yours with 'keel projects list'")


class IdentityService:
    def __init__(self, database: Database, keys: KeyService, events: ChangeBus):
        self._db = database
        self._keys = keys
        self._events = events

    # -- which project a call acts in --------------------------------------------------

    def _project(self, session: Session, principal: Principal, project_id: str) -> Project:
        """The project, if the caller may see it; else 404 (existence is not revealed)."""
        if project_id != principal.project_id and not principal.instance_admin:
            raise _no_project(project_id)
        row = session.get(Project, project_id)
        if row is None:
            raise _no_project(project_id)
        return row

    def _require_instance_admin(self, principal: Principal, what: str) -> None:
        if not principal.instance_admin:
            raise PermissionDenied(
                f"only admins of the '{DEFAULT_PROJECT}' project may {what}; ask one of them"
            )

    # -- projects ----------------------------------------------------------------------

    def list_projects(self, principal: Principal) -> list[dict[str, Any]]:
        with self._db.session() as session:
            query = select(Project).order_by(Project.id)
            if not principal.instance_admin:
                query = query.where(Project.id == principal.project_id)
            return [project_view(row) for row in session.scalars(query)]

    def get_project(self, principal: Principal, project_id: str) -> dict[str, Any]:
        with self._db.session() as session:
            return project_view(self._project(session, principal, project_id))

    def create_project(self, principal: Principal, spec: ProjectSpec) -> dict[str, Any]:
        self._require_instance_admin(principal, "create projects")
        try:
            with self._db.session() as session:
                if session.get(Project, spec.name) is not None:
                    raise InvalidRequest(f"project {spec.name!r} exists already", param="name")
                row = Project(id=spec.name, name=spec.name, created_at=_now(),
                              limits=spec.limits.model_dump(exclude_none=True))  # fmt: skip
                session.add(row)
                session.flush()
                view = project_view(row)
                audit.record(session, principal, "project.create", "project", row.id,
                             after=view, project_id=row.id)  # fmt: skip
        except IntegrityError as exc:
            raise InvalidRequest(f"project {spec.name!r} exists already", param="name") from exc
        return view

    def set_project_limits(
        self, principal: Principal, project_id: str, limits: ProjectLimits
    ) -> dict[str, Any]:
        self._require_instance_admin(principal, "change a project's limits and budget")
        with self._db.session() as session:
            row = self._project(session, principal, project_id)
            before = project_view(row)
            row.limits = limits.model_dump(exclude_none=True)
            session.flush()
            after = project_view(row)
            audit.record(session, principal, "project.limits", "project", project_id,
                         before=before, after=after, project_id=project_id)  # fmt: skip
        self._events.publish(Change(PROJECTS_TOPIC, project_id, project_id))
        return after

    def disable_project(self, principal: Principal, project_id: str) -> dict[str, Any]:
        """Disable a project: every key of it is revoked; its records stay."""
        self._require_instance_admin(principal, "disable projects")
        if project_id == DEFAULT_PROJECT:
            raise InvalidRequest(f"the '{DEFAULT_PROJECT}' project cannot be disabled")
        revoked: list[str] = []
        with self._db.session() as session:
            row = self._project(session, principal, project_id)
            before = project_view(row)
            now = _now()
            row.disabled_at = row.disabled_at or now
            for key in session.scalars(
                select(ApiKey).where(ApiKey.project_id == project_id, ApiKey.revoked_at.is_(None))
            ):
                key.revoked_at = now
                revoked.append(key.id)
            session.flush()
            after = project_view(row)
            audit.record(session, principal, "project.disable", "project", project_id,
                         before=before, after={**after, "revoked_keys": revoked},
                         project_id=project_id)  # fmt: skip
        for key_id in revoked:
            self._keys.changed(key_id, project_id)
        self._events.publish(Change(PROJECTS_TOPIC, project_id, project_id))
        return after

    def project_limits(self, project_id: str) -> ProjectLimits:
        """The project's limits, for admission (read on a cache miss, in a worker thread)."""
        with self._db.session() as session:
            row = session.get(Project, project_id)
            if row is None or not row.limits:
                return NO_PROJECT_LIMITS
            return ProjectLimits.model_validate(row.limits)

    def all_project_limits(self) -> dict[str, ProjectLimits]:
        with self._db.session() as session:
            return {
                row.id: ProjectLimits.model_validate(row.limits)
                for row in session.scalars(select(Project))
                if row.limits
            }

    # -- users and memberships ---------------------------------------------------------

    def list_users(self, principal: Principal, project_id: str) -> list[dict[str, Any]]:
        with self._db.session() as session:
            self._project(session, principal, project_id)
            rows = session.execute(
                select(User, Membership.role)
                .join(Membership, Membership.user_id == User.id)
                .where(Membership.project_id == project_id)
                .order_by(User.name)
            ).all()
            return [user_view(user, role) for user, role in rows]

    def _member(self, session: Session, project_id: str, user_id: str) -> tuple[User, Membership]:
        found = session.execute(
            select(User, Membership)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.project_id == project_id, User.id == user_id)
        ).first()
        if found is None:
            raise NotFound(f"no user {user_id!r} in project {project_id!r}")
        return found[0], found[1]

    def get_user(self, principal: Principal, project_id: str, user_id: str) -> dict[str, Any]:
        with self._db.session() as session:
            self._project(session, principal, project_id)
            user, membership = self._member(session, project_id, user_id)
            return user_view(user, membership.role)

    def create_user(self, principal: Principal, project_id: str, spec: UserSpec) -> dict[str, Any]:
        """Create a user and make them a member of the project with `spec.role`."""
        try:
            with self._db.session() as session:
                self._project(session, principal, project_id)
                if session.scalar(select(User.id).where(User.name == spec.name)) is not None:
                    raise InvalidRequest(f"user {spec.name!r} exists already", param="name")
                user = User(id=_new_id(), name=spec.name, email=spec.email, created_at=_now())
                session.add(user)
                session.flush()  # the membership refers to it
                session.add(Membership(project_id=project_id, user_id=user.id, role=spec.role,
                                       created_at=_now()))  # fmt: skip
                session.flush()
                view = user_view(user, spec.role)
                audit.record(session, principal, "user.create", "user", user.id, after=view,
                             project_id=project_id)  # fmt: skip
        except IntegrityError as exc:
            raise InvalidRequest(f"user {spec.name!r} exists already", param="name") from exc
        return view

    def set_membership(
        self, principal: Principal, project_id: str, user_id: str, role: str
    ) -> dict[str, Any]:
        """Add an existing user to the project, or change their role in it."""
        with self._db.session() as session:
            self._project(session, principal, project_id)
            user = session.get(User, user_id)
            if user is None:
                raise NotFound(f"no user {user_id!r}")
            membership = session.scalar(
                select(Membership).where(
                    Membership.project_id == project_id, Membership.user_id == user_id
                )
            )
            before = user_view(user, membership.role) if membership else None
            if membership is None:
                membership = Membership(project_id=project_id, user_id=user_id, role=role,
                                        created_at=_now())  # fmt: skip
                session.add(membership)
            membership.role = role
            session.flush()
            after = user_view(user, role)
            audit.record(session, principal, "membership.set", "user", user_id, before=before,
                         after=after, project_id=project_id)  # fmt: skip
        self._keys.changed(f"user:{user_id}", project_id)
        return after

    def remove_membership(
        self, principal: Principal, project_id: str, user_id: str
    ) -> dict[str, Any]:
        """Remove a user from the project; their keys for it stop working at once."""
        with self._db.session() as session:
            self._project(session, principal, project_id)
            user, membership = self._member(session, project_id, user_id)
            before = user_view(user, membership.role)
            session.delete(membership)
            audit.record(session, principal, "membership.remove", "user", user_id,
                         before=before, project_id=project_id)  # fmt: skip
        self._keys.changed(f"user:{user_id}", project_id)
        return {**before, "role": None}

    # -- keys --------------------------------------------------------------------------

    def list_keys(
        self, principal: Principal, project_id: str, *, include_revoked: bool = False
    ) -> list[dict[str, Any]]:
        with self._db.session() as session:
            self._project(session, principal, project_id)
            query = select(ApiKey, Membership.role).outerjoin(
                Membership,
                (Membership.user_id == ApiKey.user_id) & (Membership.project_id == project_id),
            )
            query = query.where(ApiKey.project_id == project_id).order_by(ApiKey.created_at)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return [key_view(row, role) for row, role in session.execute(query)]

    def _key(self, session: Session, project_id: str, key_id: str) -> ApiKey:
        row = session.get(ApiKey, key_id)
        if row is None or row.project_id != project_id:
            raise NotFound(f"no key {key_id!r} in project {project_id!r}")
        return row

    def get_key(self, principal: Principal, project_id: str, key_id: str) -> dict[str, Any]:
        with self._db.session() as session:
            self._project(session, principal, project_id)
            return key_view(self._key(session, project_id, key_id))

    def create_key(
        self, principal: Principal, project_id: str, spec: KeySpec
    ) -> tuple[dict[str, Any], str]:
        """Create a key; returns its view and the full key, which is never shown again."""
        with self._db.session() as session:
            project = self._project(session, principal, project_id)
            if project.disabled_at is not None:
                raise InvalidRequest(f"project {project_id!r} is disabled; it takes no new keys")
            role: str = spec.role or "app"
            if spec.user_id is not None:
                _, membership = self._member(session, project_id, spec.user_id)
                if spec.role is not None and spec.role != membership.role:
                    raise InvalidRequest(
                        f"a user's key acts with the user's role in the project "
                        f"({membership.role}); omit role, or change the membership",
                        param="role",
                    )
                role = membership.role
        expires_at = None
        if spec.expires_in_days is not None:
            expires_at = _now() + timedelta(days=spec.expires_in_days)
        key_id, token = self._keys.create_key(
            project_id=project_id,
            role=role,
            name=spec.name,
            user_id=spec.user_id,
            scopes=spec.scopes.model_dump(exclude_none=True),
            limits=spec.limits.model_dump(exclude_none=True),
            expires_at=expires_at,
        )
        with self._db.session() as session:
            view = key_view(self._key(session, project_id, key_id))
            audit.record(session, principal, "key.create", "key", key_id, after=view,
                         project_id=project_id)  # fmt: skip
        return view, token

    def revoke_key(self, principal: Principal, project_id: str, key_id: str) -> dict[str, Any]:
        with self._db.session() as session:
            self._project(session, principal, project_id)
            row = self._key(session, project_id, key_id)
            before = key_view(row)
            if row.revoked_at is None:
                row.revoked_at = _now()
            session.flush()
            after = key_view(row)
            if before["revoked_at"] is None:
                audit.record(session, principal, "key.revoke", "key", key_id, before=before,
                             after=after, project_id=project_id)  # fmt: skip
        self._keys.changed(key_id, project_id)
        return after


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


__all__ = ["ROLES", "IdentityService", "KeySpec", "MembershipSpec", "ProjectSpec", "UserSpec"]
