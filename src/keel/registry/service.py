"""The registry service: providers, model versions, routes (with history) and deployments.

Synchronous (call it from worker threads). Every change writes its audit row in the
same transaction and then publishes a change event, so routers refresh at once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keel.auth import audit
from keel.auth.keys import Principal
from keel.errors import InvalidRequest, KeelError, NotFound
from keel.events import Change, ChangeBus
from keel.providers.plugins import ProviderPlugins
from keel.registry.snapshot import (
    DeploymentEntry,
    ModelVersionEntry,
    ProviderEntry,
    RouteEntry,
    Snapshot,
)
from keel.registry.specs import (
    DeploymentSpec,
    ModelVersionSpec,
    ProviderSpec,
    RouteSpec,
    check_provider_kind,
    parse_version_ref,
)
from keel.registry.tables import (
    DeploymentRow,
    ModelVersionRow,
    ProviderRow,
    RouteRevisionRow,
    RouteRow,
)
from keel.store.db import Database

TOPIC = "registry"
Actor = Principal | str


class InUse(KeelError):
    """409: what the caller wants deleted is still used by something else, named in the message."""

    status = 409
    type = "invalid_request_error"


class Encryptor(Protocol):
    def encrypt(self, plaintext: str) -> str: ...

    def decrypt(self, token: str) -> str: ...


def _now() -> datetime:
    return datetime.now(UTC)


def provider_view(row: ProviderRow) -> dict[str, Any]:
    """What the API shows of a provider: never the key, only whether one is set."""
    return {
        "name": row.name,
        "kind": row.kind,
        "base_url": row.base_url,
        "has_api_key": row.api_key_encrypted is not None or row.api_key_env is not None,
        "api_key_env": row.api_key_env,
        "config": row.config,
    }


def model_view(row: ModelVersionRow) -> dict[str, Any]:
    return {
        "ref": f"{row.name}@{row.version}",
        "name": row.name,
        "version": row.version,
        "provider": row.provider,
        "upstream_model": row.upstream_model,
        "params": row.params,
        "context_window": row.context_window,
        "input_price_per_m": row.input_price_per_m,
        "output_price_per_m": row.output_price_per_m,
        "tags": row.tags,
        "created_at": row.created_at.isoformat(),
    }


def route_view(row: RouteRow) -> dict[str, Any]:
    return {**row.spec, "revision": row.revision, "updated_at": row.updated_at.isoformat()}


class RegistryService:
    def __init__(
        self,
        database: Database,
        secrets: Encryptor,
        events: ChangeBus,
        kinds: ProviderPlugins,
        env: Mapping[str, str] | None = None,
    ):
        """`kinds`: the provider plugins installed, which decide what a provider's kind may be.
        `env`: where `api_key_env` names are read (this process's environment by default)."""
        self._db = database
        self._secrets = secrets
        self._events = events
        self._kinds = kinds
        self._env = os.environ if env is None else env

    def _changed(self, project_id: str, key: str) -> None:
        self._events.publish(Change(TOPIC, key, project_id))

    # -- providers -------------------------------------------------------------------

    def check_provider(self, spec: ProviderSpec) -> None:
        """InvalidRequest (400) when this server cannot serve `spec`: an unknown kind, or a
        key variable its environment lacks."""
        problem = check_provider_kind(spec, self._kinds)
        if problem is not None:
            field, message = problem
            raise InvalidRequest(message, param=field)
        if spec.api_key_env is not None and spec.api_key_env not in self._env:
            raise InvalidRequest(
                f"environment variable {spec.api_key_env} is not set on the Keel server "
                f"{socket.gethostname()!r}: a key written {{$env: {spec.api_key_env}}} is read "
                "by the server that uses it, not by the machine running 'keel apply'. Set "
                f"{spec.api_key_env} in the environment of 'keel serve' (on every replica) "
                "and apply again",
                param="api_key_env",
                code="missing_env",
            )

    def put_provider(
        self, project_id: str, spec: ProviderSpec, actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        """Create or update a provider; returns (view, whether anything changed)."""
        self.check_provider(spec)
        with self._db.session() as session:
            row = session.scalar(
                select(ProviderRow).where(
                    ProviderRow.project_id == project_id, ProviderRow.name == spec.name
                )
            )
            before = provider_view(row) if row else None
            if row is None:
                row = ProviderRow(project_id=project_id, name=spec.name, created_at=_now(),
                                  config={}, api_key_encrypted=None)  # fmt: skip
                session.add(row)
            key_changed = spec.api_key is not None and (
                row.api_key_encrypted is None
                or self._secrets.decrypt(row.api_key_encrypted) != spec.api_key
            )
            env_changed = spec.api_key_env is not None and spec.api_key_env != row.api_key_env
            same = (
                before is not None
                and (row.kind, row.base_url, row.config) == (spec.kind, spec.base_url, spec.config)
                and not key_changed
                and not env_changed
            )
            if same:
                return provider_view(row), False
            row.kind, row.base_url, row.config = spec.kind, spec.base_url, spec.config
            if key_changed and spec.api_key is not None:
                row.api_key_encrypted = self._secrets.encrypt(spec.api_key)
                row.api_key_env = None
            if env_changed:
                row.api_key_env = spec.api_key_env
                row.api_key_encrypted = None
            row.updated_at = _now()
            session.flush()
            after = provider_view(row)
            action = "provider.create" if before is None else "provider.update"
            audit.record(session, actor, action, "provider", spec.name, before=before,
                         after=after, project_id=project_id)  # fmt: skip
        self._changed(project_id, spec.name)
        return after, True

    def provider_was_deleted(self, project_id: str, name: str) -> bool:
        """Has an operator deleted this provider (so first-start seeding must not undo it)?"""
        deleted = audit.AuditLog(self._db).list(
            project_id, target_type="provider", target_id=name, action="provider.delete", limit=1
        )
        return bool(deleted)

    def list_providers(self, project_id: str) -> list[dict[str, Any]]:
        with self._db.session() as session:
            rows = session.scalars(
                select(ProviderRow)
                .where(ProviderRow.project_id == project_id)
                .order_by(ProviderRow.name)
            )
            return [provider_view(row) for row in rows]

    def get_provider(self, project_id: str, name: str) -> dict[str, Any]:
        with self._db.session() as session:
            return provider_view(self._provider(session, project_id, name))

    def _provider(self, session: Session, project_id: str, name: str) -> ProviderRow:
        row = session.scalar(
            select(ProviderRow).where(
                ProviderRow.project_id == project_id, ProviderRow.name == name
            )
        )
        if row is None:
            known = session.scalars(
                select(ProviderRow.name).where(ProviderRow.project_id == project_id)
            ).all()
            raise NotFound(
                f"unknown provider {name!r} (known: {', '.join(known) or 'none'}); "
                "add it with 'keel providers add' or keel apply",
                param="provider",
            )
        return row

    def delete_provider(self, project_id: str, name: str, actor: Actor) -> dict[str, Any]:
        """Delete a provider no model version uses; InUse (409) naming the versions if any do."""
        with self._db.session() as session:
            row = self._provider(session, project_id, name)
            users = session.scalars(
                select(ModelVersionRow).where(
                    ModelVersionRow.project_id == project_id, ModelVersionRow.provider == name
                )
            ).all()
            if users:
                refs = ", ".join(f"{m.name}@{m.version}" for m in users)
                raise InUse(
                    f"provider {name!r} serves model version(s) {refs}; delete them first "
                    "('keel models delete REF', or drop them from keel.yaml and apply --prune)",
                    param="provider",
                    code="in_use",
                )
            before = provider_view(row)
            session.delete(row)
            audit.record(session, actor, "provider.delete", "provider", name, before=before,
                         project_id=project_id)  # fmt: skip
        self._changed(project_id, name)
        return before

    # -- model versions --------------------------------------------------------------

    def add_model_version(
        self, project_id: str, spec: ModelVersionSpec, actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        """Add a version, or return the newest one unchanged when its content is the same."""
        with self._db.session() as session:
            self._provider(session, project_id, spec.provider)
            latest = session.scalar(
                select(ModelVersionRow)
                .where(ModelVersionRow.project_id == project_id, ModelVersionRow.name == spec.name)
                .order_by(ModelVersionRow.version.desc())
                .limit(1)
            )
            if latest is not None and _model_spec(latest) == spec:
                return model_view(latest), False
            row = ModelVersionRow(
                project_id=project_id,
                version=(latest.version + 1) if latest else 1,
                created_at=_now(),
                **spec.model_dump(),
            )
            session.add(row)
            session.flush()
            view = model_view(row)
            audit.record(session, actor, "model.create", "model", view["ref"], after=view,
                         project_id=project_id)  # fmt: skip
        self._changed(project_id, view["ref"])
        return view, True

    def list_models(self, project_id: str) -> list[dict[str, Any]]:
        with self._db.session() as session:
            rows = session.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.project_id == project_id)
                .order_by(ModelVersionRow.name, ModelVersionRow.version)
            )
            return [model_view(row) for row in rows]

    def get_model(self, project_id: str, ref: str) -> dict[str, Any]:
        with self._db.session() as session:
            return model_view(self._model(session, project_id, ref))

    def _model(self, session: Session, project_id: str, ref: str) -> ModelVersionRow:
        try:
            name, version = parse_version_ref(ref)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="model") from exc
        row = session.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.project_id == project_id,
                ModelVersionRow.name == name,
                ModelVersionRow.version == version,
            )
        )
        if row is None:
            raise NotFound(
                f"unknown model version {ref!r}; list them with 'keel models list'", param="model"
            )
        return row

    def delete_model_version(self, project_id: str, ref: str, actor: Actor) -> dict[str, Any]:
        """Delete a version no route and no deployment uses; InUse (409) naming them if any do."""
        with self._db.session() as session:
            row = self._model(session, project_id, ref)
            using = []
            for route in session.scalars(select(RouteRow).where(RouteRow.project_id == project_id)):
                weight = route.spec.get("targets", {}).get(ref)
                if weight is not None:
                    using.append(f"route {route.name!r} (weight {weight})")
                elif ref in route.spec.get("fallbacks", []):
                    using.append(f"route {route.name!r} (fallback)")
            deployed = session.scalar(
                select(DeploymentRow).where(
                    DeploymentRow.project_id == project_id, DeploymentRow.model == ref
                )
            )
            if deployed is not None:
                using.append(f"a deployment of {deployed.replicas} replica(s)")
            if using:
                raise InUse(
                    f"model version {ref} is used by {', '.join(using)}; take it out of those "
                    "routes ('keel routes set-split') and undeploy it ('keel undeploy') first",
                    param="model",
                    code="in_use",
                )
            before = model_view(row)
            session.delete(row)
            audit.record(session, actor, "model.delete", "model", ref, before=before,
                         project_id=project_id)  # fmt: skip
        self._changed(project_id, ref)
        return before

    # -- routes ----------------------------------------------------------------------

    def put_route(
        self, project_id: str, spec: RouteSpec, actor: Actor, *, action: str = "route.update"
    ) -> tuple[dict[str, Any], bool]:
        """Create or change a route; each change is a new revision (what rollback undoes).

        `action` names the change in the audit log (route.update, route.split,
        route.promote, route.apply); a new route is always route.create.
        """
        with self._db.session() as session:
            for ref in spec.refs():
                self._model(session, project_id, ref)
            row = self._route_row(session, project_id, spec.name, missing_ok=True)
            wanted = spec.model_dump()
            if row is not None and row.spec == wanted:
                return route_view(row), False
            before = route_view(row) if row else None
            if row is None:
                row = RouteRow(project_id=project_id, name=spec.name, spec=wanted, revision=0,
                               updated_at=_now())  # fmt: skip
                session.add(row)
                session.flush()
            revision = self._next_revision(session, row.id)
            row.spec, row.revision, row.updated_at = wanted, revision, _now()
            session.add(RouteRevisionRow(route_id=row.id, revision=revision, spec=wanted,
                                         reverted=False, actor=_actor(actor),
                                         created_at=_now()))  # fmt: skip
            session.flush()
            after = route_view(row)
            done = "route.create" if before is None else action
            audit.record(session, actor, done, "route", spec.name, before=before, after=after,
                         project_id=project_id)  # fmt: skip
        self._changed(project_id, spec.name)
        return after, True

    def set_split(
        self, project_id: str, name: str, targets: dict[str, int], actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        current = self.route_spec(project_id, name)
        spec = current.model_copy(update={"targets": targets})
        return self.put_route(project_id, spec, actor, action="route.split")

    def promote(
        self, project_id: str, name: str, ref: str, actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        current = self.route_spec(project_id, name)
        spec = current.model_copy(update={"targets": {ref: 100}})
        return self.put_route(project_id, spec, actor, action="route.promote")

    def rollback(self, project_id: str, name: str, actor: Actor) -> dict[str, Any]:
        """Restore the route's previous state (the latest revision not rolled back)."""
        with self._db.session() as session:
            row = self._route_row(session, project_id, name)
            current = session.scalar(
                select(RouteRevisionRow).where(
                    RouteRevisionRow.route_id == row.id, RouteRevisionRow.revision == row.revision
                )
            )
            previous = session.scalar(
                select(RouteRevisionRow)
                .where(
                    RouteRevisionRow.route_id == row.id,
                    RouteRevisionRow.revision < row.revision,
                    RouteRevisionRow.reverted.is_(False),
                )
                .order_by(RouteRevisionRow.revision.desc())
                .limit(1)
            )
            if previous is None or current is None:
                raise InvalidRequest(
                    f"route {name!r} has no earlier state to roll back to", param="route"
                )
            before = route_view(row)
            current.reverted = True
            row.spec, row.revision, row.updated_at = previous.spec, previous.revision, _now()
            session.flush()
            after = route_view(row)
            audit.record(session, actor, "route.rollback", "route", name, before=before,
                         after=after, project_id=project_id)  # fmt: skip
        self._changed(project_id, name)
        return after

    def delete_route(self, project_id: str, name: str, actor: Actor) -> dict[str, Any]:
        """Delete a route and its history; clients sending its name get 404 from now on."""
        with self._db.session() as session:
            row = self._route_row(session, project_id, name)
            before = route_view(row)
            for revision in session.scalars(
                select(RouteRevisionRow).where(RouteRevisionRow.route_id == row.id)
            ):
                session.delete(revision)
            session.delete(row)
            audit.record(session, actor, "route.delete", "route", name, before=before,
                         project_id=project_id)  # fmt: skip
        self._changed(project_id, name)
        return before

    def route_spec(self, project_id: str, name: str) -> RouteSpec:
        with self._db.session() as session:
            return RouteSpec.model_validate(self._route_row(session, project_id, name).spec)

    def get_route(self, project_id: str, name: str) -> dict[str, Any]:
        with self._db.session() as session:
            row = self._route_row(session, project_id, name)
            history = session.scalars(
                select(RouteRevisionRow)
                .where(RouteRevisionRow.route_id == row.id)
                .order_by(RouteRevisionRow.revision)
            )
            return {
                **route_view(row),
                "history": [
                    {
                        "revision": h.revision,
                        "targets": h.spec["targets"],
                        "reverted": h.reverted,
                        "actor": h.actor,
                        "at": h.created_at.isoformat(),
                    }
                    for h in history
                ],
            }

    def list_routes(self, project_id: str) -> list[dict[str, Any]]:
        with self._db.session() as session:
            rows = session.scalars(
                select(RouteRow).where(RouteRow.project_id == project_id).order_by(RouteRow.name)
            )
            return [route_view(row) for row in rows]

    def _route_row(
        self, session: Session, project_id: str, name: str, missing_ok: bool = False
    ) -> Any:
        row = session.scalar(
            select(RouteRow).where(RouteRow.project_id == project_id, RouteRow.name == name)
        )
        if row is None and not missing_ok:
            raise NotFound(f"unknown route {name!r}; list them with 'keel routes list'",
                           param="route")  # fmt: skip
        return row

    def _next_revision(self, session: Session, route_id: int) -> int:
        highest = session.scalar(
            select(func.max(RouteRevisionRow.revision)).where(RouteRevisionRow.route_id == route_id)
        )
        return int(highest or 0) + 1

    # -- deployments -----------------------------------------------------------------

    def put_deployment(
        self, project_id: str, spec: DeploymentSpec, actor: Actor
    ) -> tuple[dict[str, Any], bool]:
        with self._db.session() as session:
            model = self._model(session, project_id, spec.model)
            provider = self._provider(session, project_id, model.provider)
            if provider.kind != "local":
                raise InvalidRequest(
                    f"{spec.model} runs on provider {provider.name!r} of kind {provider.kind}; "
                    "only models of a local provider can be deployed by Keel",
                    param="model",
                )
            row = session.scalar(
                select(DeploymentRow).where(
                    DeploymentRow.project_id == project_id, DeploymentRow.model == spec.model
                )
            )
            before = (
                {"model": row.model, "replicas": row.replicas, "on": row.placement} if row else None
            )
            if row is not None and (row.replicas, row.placement) == (spec.replicas, spec.on):
                return before or {}, False
            if row is None:
                row = DeploymentRow(project_id=project_id, model=spec.model, replicas=0,
                                    updated_at=_now())  # fmt: skip
                session.add(row)
            row.replicas, row.placement, row.updated_at = spec.replicas, spec.on, _now()
            after = {"model": spec.model, "replicas": spec.replicas, "on": spec.on}
            audit.record(session, actor, "deployment.set", "deployment", spec.model,
                         before=before, after=after, project_id=project_id)  # fmt: skip
        self._changed(project_id, spec.model)
        return after, True

    def delete_deployment(self, project_id: str, model: str, actor: Actor) -> None:
        with self._db.session() as session:
            row = session.scalar(
                select(DeploymentRow).where(
                    DeploymentRow.project_id == project_id, DeploymentRow.model == model
                )
            )
            if row is None:
                raise NotFound(f"{model} is not deployed; see 'keel deployments list'",
                               param="model")  # fmt: skip
            before = {"model": row.model, "replicas": row.replicas}
            session.delete(row)
            audit.record(session, actor, "deployment.delete", "deployment", model,
                         before=before, project_id=project_id)  # fmt: skip
        self._changed(project_id, model)

    def list_deployments(self, project_id: str) -> list[dict[str, Any]]:
        with self._db.session() as session:
            rows = session.scalars(
                select(DeploymentRow).where(DeploymentRow.project_id == project_id)
            )
            return [
                {"model": row.model, "replicas": row.replicas, "on": row.placement} for row in rows
            ]

    # -- the router's view -------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every project's providers (keys decrypted), versions, routes and deployments."""
        with self._db.session() as session:
            providers = session.scalars(select(ProviderRow))
            models = session.scalars(select(ModelVersionRow))
            routes = session.scalars(select(RouteRow))
            deployments = session.scalars(select(DeploymentRow))
            return Snapshot(
                providers=tuple(self._provider_entry(row) for row in providers),
                models=tuple(_model_entry(row) for row in models),
                routes=tuple(_route_entry(row) for row in routes),
                deployments=tuple(
                    DeploymentEntry(row.project_id, row.model, row.replicas, row.placement)
                    for row in deployments
                ),
            )

    def _provider_entry(self, row: ProviderRow) -> ProviderEntry:
        key = self._secrets.decrypt(row.api_key_encrypted) if row.api_key_encrypted else None
        if row.api_key_env is not None:
            key = self._env.get(row.api_key_env)
        return ProviderEntry(
            project_id=row.project_id,
            name=row.name,
            kind=row.kind,
            base_url=row.base_url,
            api_key=key,
            config=MappingProxyType(dict(row.config)),
            api_key_env=row.api_key_env,
        )


def _model_entry(row: ModelVersionRow) -> ModelVersionEntry:
    return ModelVersionEntry(
        project_id=row.project_id,
        name=row.name,
        version=row.version,
        provider=row.provider,
        upstream_model=row.upstream_model,
        params=MappingProxyType(dict(row.params)),
        input_price_per_m=row.input_price_per_m,
        output_price_per_m=row.output_price_per_m,
    )


def _route_entry(row: RouteRow) -> RouteEntry:
    spec = row.spec
    timeout, sticky = spec.get("timeout"), spec.get("sticky")
    return RouteEntry(
        project_id=row.project_id,
        name=row.name,
        targets=MappingProxyType({str(ref): int(w) for ref, w in spec["targets"].items()}),
        sticky="key" if sticky == "key" else "user" if sticky == "user" else None,
        fallbacks=tuple(str(ref) for ref in spec.get("fallbacks", [])),
        timeout=float(timeout) if timeout is not None else None,
        retries=int(spec.get("retries", 2)),
        breaker_failures=_int_or_none(spec.get("breaker_failures")),
        breaker_cooldown=_float_or_none(spec.get("breaker_cooldown")),
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if value is not None else None


def _model_spec(row: ModelVersionRow) -> ModelVersionSpec:
    return ModelVersionSpec(
        name=row.name,
        provider=row.provider,
        upstream_model=row.upstream_model,
        params=row.params,
        context_window=row.context_window,
        input_price_per_m=row.input_price_per_m,
        output_price_per_m=row.output_price_per_m,
        tags=row.tags,
    )


def _actor(actor: Actor) -> str:
    return f"key:{actor.key_id}" if isinstance(actor, Principal) else actor
