"""Guard policies of a project and where they apply; which policy a request runs.

`GuardService` is the control plane (synchronous, call it from worker threads): custom
policies and attachments in the database, an audit row in the same transaction as each
change, then Change("guard", …). It also keeps the request path's view in memory: every
change reloads the attachments and rebuilds the policies off the event loop, so
`policy_for` answers from dictionaries.

Which policy runs, most specific first: the X-Keel-Guard-Policy header (when the key may
choose), the key's attachment, the route's, the project's, then the instance default
(`guard_policy` setting). The name `none` runs no guard.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import delete, select

from keel.auth import audit
from keel.auth.keys import Principal
from keel.errors import InvalidRequest, NotFound, PermissionDenied
from keel.events import Change, ChangeBus
from keel.guard.policy import BUILTIN_POLICIES, GuardResources, Policy, PolicyError
from keel.guard.tables import GuardAttachmentRow, GuardPolicyRow
from keel.store.db import Database

log = logging.getLogger("keel.guard")

TOPIC = "guard"
NONE = "none"  # the policy name that runs no guard
HEADER = "x-keel-guard-policy"
Scope = Literal["project", "route", "key"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Roles that may pick any policy per request; other keys need it in their guard scope.
_CHOOSERS = frozenset({"admin", "developer"})


def check_name(name: str, param: str = "name") -> None:
    if not _NAME.match(name):
        raise InvalidRequest(
            f"invalid policy name {name[:120]!r}: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 100 characters",
            param=param,
        )


@dataclass(frozen=True)
class Attachment:
    scope: Scope
    target: str
    policy: str

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "target": self.target or None, "policy": self.policy}


@dataclass(frozen=True)
class _Snapshot:
    specs: dict[tuple[str, str], dict[str, Any]]  # (project, name) → custom policy spec
    attachments: dict[tuple[str, str, str], str]  # (project, scope, target) → policy


class GuardService:
    def __init__(
        self,
        database: Database,
        events: ChangeBus,
        *,
        default_policy: str = "",
        declared: Mapping[str, Mapping[str, Any]] | None = None,
        resources: GuardResources | None = None,
    ):
        self._db = database
        self._events = events
        self.default_policy = default_policy or NONE
        # Policies from the settings (keel.yaml): every project may use them by name.
        self.declared = {name: {**spec, "name": name} for name, spec in (declared or {}).items()}
        self.resources = resources or GuardResources()
        self._snapshot = _Snapshot({}, {})
        self._compiled: dict[tuple[str, str], Policy] = {}
        self._lock = threading.Lock()
        # A change anywhere reloads this replica's view, in the thread that publishes it.
        events.subscribe(TOPIC, lambda _change: self.reload())

    # -- the request path ------------------------------------------------------------

    def reload(self) -> None:
        """Read attachments and custom policies; build every policy they name (blocking)."""
        with self._db.session() as session:
            specs = {
                (row.project_id, row.name): dict(row.spec)
                for row in session.scalars(select(GuardPolicyRow))
            }
            attachments = {
                (row.project_id, row.scope, row.target): row.policy
                for row in session.scalars(select(GuardAttachmentRow))
            }
        snapshot = _Snapshot(specs, attachments)
        wanted = {(project, policy) for (project, _, _), policy in attachments.items()}
        wanted |= set(specs)
        compiled: dict[tuple[str, str], Policy] = {}
        for project, name in wanted:
            policy = self._build(snapshot, project, name)
            if policy is not None:
                compiled[(project, name)] = policy
        if self.default_policy != NONE:
            policy = self._build(snapshot, "", self.default_policy)
            if policy is not None:
                compiled[("", self.default_policy)] = policy
        with self._lock:
            self._snapshot, self._compiled = snapshot, compiled

    def _build(self, snapshot: _Snapshot, project: str, name: str) -> Policy | None:
        if name == NONE:
            return None
        key = (project, name)
        with self._lock:
            unchanged = self._snapshot.specs.get(key) == snapshot.specs.get(key)
            if key in self._compiled and unchanged:
                return self._compiled[key]
        try:
            spec = snapshot.specs.get(key) or self.declared.get(name)
            if spec is not None:
                return Policy.from_dict(spec, self.resources)
            if name in BUILTIN_POLICIES:
                return Policy.builtin(name, self.resources)
            log.warning("guard policy %r attached in project %r does not exist", name, project)
        except PolicyError:
            log.exception("guard policy %r of project %r cannot be built", name, project)
        return None

    def warm_up(self) -> None:
        """Load the models of the policies in use now rather than on a first request."""
        with self._lock:
            policies = list(self._compiled.values())
        for policy in policies:
            policy.warm_up()

    def _choose(self, principal: Principal, route: str, header: str | None) -> tuple[str, str]:
        """(project or "" for the instance default, policy name) for this request."""
        project = principal.project_id
        if header is not None:
            name = header.strip()
            allowed = principal.scopes.guard_policies
            if principal.role not in _CHOOSERS and (
                allowed is None or (name not in allowed and "*" not in allowed)
            ):
                raise PermissionDenied(
                    f"this key may not choose the guard policy {name[:100]!r} per request; "
                    "add it to the key's scopes.guard_policies, or drop the "
                    "X-Keel-Guard-Policy header",
                    param="X-Keel-Guard-Policy",
                )
            return project, name
        attachments = self._snapshot.attachments
        for scope, target in (("key", principal.key_id), ("route", route), ("project", "")):
            attached = attachments.get((project, scope, target))
            if attached is not None:
                return project, attached
        return "", self.default_policy

    async def policy_for(
        self, principal: Principal, route: str, headers: Mapping[str, str]
    ) -> Policy | None:
        """The policy a request runs, or None; builds a policy chosen by header if new."""
        project, name = self._choose(principal, route, headers.get(HEADER))
        if name == NONE:
            return None
        policy = self._compiled.get((project, name))
        if policy is not None:
            return policy
        snapshot = self._snapshot
        if not self.exists(snapshot, project, name):
            raise InvalidRequest(
                f"unknown guard policy {name[:100]!r}; built in: "
                f"{', '.join([*BUILTIN_POLICIES, NONE])}, or one of the project's "
                "(GET /api/guard/policies)",
                param="X-Keel-Guard-Policy",
            )
        policy = await asyncio.to_thread(self._build, snapshot, project, name)
        if policy is not None:
            with self._lock:
                self._compiled[(project, name)] = policy
        return policy

    def exists(self, snapshot: _Snapshot | None, project: str, name: str) -> bool:
        specs = (snapshot or self._snapshot).specs
        return (project, name) in specs or name in self.declared or name in BUILTIN_POLICIES

    def check_declared(self) -> None:
        """Build the settings' policies and default once: a bad one stops start-up."""
        for name, spec in self.declared.items():
            if name in BUILTIN_POLICIES or name == NONE:
                raise PolicyError(f"guard_policies: {name!r} is a built-in policy name")
            Policy.from_dict(spec, self.resources)
        if self.default_policy != NONE and not self.exists(None, "", self.default_policy):
            raise PolicyError(
                f"guard_policy {self.default_policy!r} is neither built in "
                f"({', '.join(BUILTIN_POLICIES)}) nor in guard_policies"
            )

    # -- the control plane -----------------------------------------------------------

    def list_policies(self, project_id: str) -> list[dict[str, Any]]:
        with self._db.session() as session:
            rows = session.scalars(
                select(GuardPolicyRow)
                .where(GuardPolicyRow.project_id == project_id)
                .order_by(GuardPolicyRow.name)
            ).all()
            custom = [
                {"name": r.name, "builtin": False, "spec": r.spec, "updated_at": _iso(r.updated_at)}
                for r in rows
            ]
        builtin = [
            {"name": name, "builtin": True, "spec": spec, "updated_at": None}
            for name, spec in [*BUILTIN_POLICIES.items(), *self.declared.items()]
        ]
        return builtin + custom

    def get_policy(self, project_id: str, name: str) -> dict[str, Any]:
        for policy in self.list_policies(project_id):
            if policy["name"] == name:
                return policy
        raise NotFound(
            f"no guard policy {name[:100]!r} in project {project_id!r} "
            "(GET /api/guard/policies lists them)",
            param="name",
        )

    def put_policy(
        self, project_id: str, name: str, spec: dict[str, Any], *, actor: Principal | str
    ) -> dict[str, Any]:
        """Create or replace a custom policy; the spec is built once to prove it works."""
        check_name(name)
        if name in BUILTIN_POLICIES or name == NONE or name in self.declared:
            raise InvalidRequest(
                f"{name!r} is a built-in policy name; pick another name", param="name"
            )
        spec = {**spec, "name": name}
        try:
            orjson.dumps(spec)
        except TypeError as exc:
            raise InvalidRequest(
                f"the policy holds a value JSON cannot store ({exc}); use plain numbers, "
                "strings, lists and mappings",
                param="spec",
            ) from exc
        try:
            Policy.from_dict(spec, self.resources)
        except PolicyError as exc:
            raise InvalidRequest(str(exc)[:2000], param="spec") from exc
        now = datetime.now(UTC)
        with self._db.session() as session:
            row = session.scalars(
                select(GuardPolicyRow).where(
                    GuardPolicyRow.project_id == project_id, GuardPolicyRow.name == name
                )
            ).one_or_none()
            before = dict(row.spec) if row is not None else None
            if row is None:
                row = GuardPolicyRow(project_id=project_id, name=name, spec=spec, updated_at=now)
                session.add(row)
            else:
                row.spec, row.updated_at = spec, now
            audit.record(
                session, actor, "guard.policy.put", "guard_policy", name,
                before=before, after=spec, project_id=project_id,
            )  # fmt: skip
        self._events.publish(Change(TOPIC, name, project_id))
        return {"name": name, "builtin": False, "spec": spec, "updated_at": now.isoformat()}

    def delete_policy(self, project_id: str, name: str, *, actor: Principal | str) -> None:
        check_name(name)
        with self._db.session() as session:
            row = session.scalars(
                select(GuardPolicyRow).where(
                    GuardPolicyRow.project_id == project_id, GuardPolicyRow.name == name
                )
            ).one_or_none()
            if row is None:
                raise NotFound(f"no custom guard policy {name[:100]!r}", param="name")
            used = session.scalars(
                select(GuardAttachmentRow).where(
                    GuardAttachmentRow.project_id == project_id, GuardAttachmentRow.policy == name
                )
            ).first()
            if used is not None:
                raise InvalidRequest(
                    f"policy {name!r} is attached to {used.scope} {used.target or project_id!r}; "
                    "detach it first",
                    param="name",
                )
            audit.record(
                session, actor, "guard.policy.delete", "guard_policy", name,
                before=row.spec, project_id=project_id,
            )  # fmt: skip
            session.delete(row)
        self._events.publish(Change(TOPIC, name, project_id))

    def list_attachments(self, project_id: str) -> list[dict[str, Any]]:
        with self._db.session() as session:
            rows = session.scalars(
                select(GuardAttachmentRow)
                .where(GuardAttachmentRow.project_id == project_id)
                .order_by(GuardAttachmentRow.scope, GuardAttachmentRow.target)
            ).all()
            return [Attachment(r.scope, r.target, r.policy).as_dict() for r in rows]  # type: ignore[arg-type]

    def attach(
        self,
        project_id: str,
        scope: Scope,
        target: str | None,
        policy: str | None,
        *,
        actor: Principal | str,
    ) -> dict[str, Any]:
        """Bind `policy` to the project, a route or a key (None: remove the binding)."""
        target = "" if scope == "project" else (target or "")
        if scope != "project" and not target:
            raise InvalidRequest(f"a {scope} attachment needs a target", param="target")
        if policy is not None:
            check_name(policy, "policy")
            if policy not in BUILTIN_POLICIES and policy != NONE and policy not in self.declared:
                with self._db.session() as session:
                    exists = session.scalars(
                        select(GuardPolicyRow.id).where(
                            GuardPolicyRow.project_id == project_id, GuardPolicyRow.name == policy
                        )
                    ).first()
                if exists is None:
                    raise NotFound(
                        f"no guard policy {policy!r}; create it first (PUT "
                        f"/api/guard/policies/{policy}) or use {', '.join(BUILTIN_POLICIES)}",
                        param="policy",
                    )
        now = datetime.now(UTC)
        where = (
            GuardAttachmentRow.project_id == project_id,
            GuardAttachmentRow.scope == scope,
            GuardAttachmentRow.target == target,
        )
        with self._db.session() as session:
            row = session.scalars(select(GuardAttachmentRow).where(*where)).one_or_none()
            before = row.policy if row is not None else None
            if policy is None:
                session.execute(delete(GuardAttachmentRow).where(*where))
            elif row is None:
                session.add(
                    GuardAttachmentRow(
                        project_id=project_id,
                        scope=scope,
                        target=target,
                        policy=policy,
                        updated_at=now,
                    )
                )
            else:
                row.policy, row.updated_at = policy, now
            audit.record(
                session, actor, "guard.attach", f"guard_{scope}", target or project_id,
                before=before, after=policy, project_id=project_id,
            )  # fmt: skip
        self._events.publish(Change(TOPIC, f"{scope}:{target}", project_id))
        return {"scope": scope, "target": target or None, "policy": policy}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
