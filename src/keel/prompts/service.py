"""PromptService: create versions, move labels, archive, and read prompts of one project.

Synchronous (call it from worker threads). Every change writes its audit record in the
same transaction and, once committed, publishes Change("prompts", name, project).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keel.auth import audit
from keel.auth.keys import Principal
from keel.errors import InvalidRequest, NotFound
from keel.events import Change, ChangeBus
from keel.prompts.render import CompiledPrompt, PromptSandbox
from keel.prompts.spec import (
    DEFAULT_LABEL,
    LATEST,
    PromptContent,
    diff_contents,
    valid_label,
    valid_name,
)
from keel.prompts.tables import Prompt, PromptLabel, PromptVersion
from keel.store.db import Database

TOPIC = "prompts"
_ATTEMPTS = 3


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes that were stored as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value else None


def actor_name(actor: Principal | str) -> str:
    return f"key:{actor.key_id}" if isinstance(actor, Principal) else actor


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: int
    content: PromptContent
    message: str
    author: str
    created_at: datetime
    labels: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "message": self.message,
            "author": self.author,
            "created_at": _iso(self.created_at),
            **self.content.canonical(),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "labels": list(self.labels),
            "message": self.message,
            "author": self.author,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class PromptSummary:
    name: str
    latest: int
    labels: dict[str, int]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latest_version": self.latest,
            "labels": self.labels,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "archived": self.archived_at is not None,
            "archived_at": _iso(self.archived_at),
        }


@dataclass(frozen=True)
class Pointers:
    """What the gateway needs to pick a version: labels (latest included) and state."""

    labels: dict[str, int] = field(default_factory=dict)
    archived: bool = False


def check_name(name: str, param: str = "name") -> None:
    if not valid_name(name):
        raise InvalidRequest(
            f"invalid prompt name {name[:120]!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 100 characters)",
            param=param,
        )


def check_label(label: str, param: str = "label", *, settable: bool = False) -> None:
    if not valid_label(label):
        raise InvalidRequest(
            f"invalid label {label[:80]!r}: use lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (e.g. production, staging, canary-2)",
            param=param,
        )
    if settable and label == LATEST:
        raise InvalidRequest(
            "'latest' always points at the newest version and cannot be moved; "
            "push a new version, or use another label",
            param=param,
        )


def not_found(name: str) -> NotFound:
    return NotFound(
        f"no prompt named {name!r} in this project; list them with GET /api/prompts "
        "or 'keel prompts list'",
        param="name",
        code="prompt_not_found",
    )


class PromptService:
    def __init__(self, database: Database, events: ChangeBus, sandbox: PromptSandbox | None = None):
        self._db = database
        self._events = events
        self.sandbox = sandbox or PromptSandbox()

    # -- changes -------------------------------------------------------------------

    def create_version(
        self,
        project_id: str,
        name: str,
        content: PromptContent,
        *,
        message: str,
        actor: Principal | str,
    ) -> tuple[VersionRecord, bool]:
        """Add a version unless the content equals the newest one; (version, created)."""
        check_name(name)
        self.sandbox.compile(content)  # a template that cannot compile never gets stored
        for attempt in range(_ATTEMPTS):
            try:
                record, created = self._create(project_id, name, content, message, actor)
                break
            except IntegrityError:
                # Two writers picked the same version number; the loser counts again.
                if attempt == _ATTEMPTS - 1:
                    raise
        if created:
            self._events.publish(Change(TOPIC, name, project_id))
        return record, created

    def _create(
        self,
        project_id: str,
        name: str,
        content: PromptContent,
        message: str,
        actor: Principal | str,
    ) -> tuple[VersionRecord, bool]:
        digest = content.content_hash()
        now = datetime.now(UTC)
        with self._db.session() as session:
            prompt = self._prompt(session, project_id, name)
            newest = None
            if prompt is None:
                prompt = Prompt(project_id=project_id, name=name, created_at=now)
                session.add(prompt)
                session.flush()
            else:
                newest = self._newest(session, prompt.id)
            if newest is not None and newest.content_hash == digest and not prompt.archived_at:
                return self._record(session, prompt, newest), False
            number = (newest.version if newest else 0) + 1
            row = PromptVersion(
                prompt_id=prompt.id,
                version=number,
                messages=[m.model_dump(mode="json") for m in content.messages],
                variables=[v.model_dump(mode="json") for v in content.variables],
                allow_extra=content.allow_extra_variables,
                config=content.config.model_dump(mode="json"),
                content_hash=digest,
                message=message,
                author=actor_name(actor),
                created_at=now,
            )
            session.add(row)
            before: dict[str, Any] = {"latest": newest.version if newest else None}
            if prompt.archived_at is not None:
                before["archived"] = True
                prompt.archived_at = None
            session.flush()
            audit.record(
                session, actor, "prompt.version.create", "prompt", name,
                before=before,
                after={"latest": number, "content_hash": digest, "message": message},
                project_id=project_id,
            )  # fmt: skip
            return self._record(session, prompt, row), True

    def set_label(
        self, project_id: str, name: str, label: str, version: int, *, actor: Principal | str
    ) -> tuple[int | None, int]:
        """Point `label` at `version`; (previous version or None, version)."""
        check_name(name)
        check_label(label, settable=True)
        with self._db.session() as session:
            prompt = self._existing(session, project_id, name)
            if prompt.archived_at is not None:
                raise InvalidRequest(
                    f"prompt {name!r} is archived; push a new version to restore it first",
                    param="name",
                )
            latest = self._latest_number(session, prompt.id)
            if not 1 <= version <= latest:
                raise NotFound(
                    f"prompt {name!r} has no version {version} (versions 1 to {latest})",
                    param="version",
                    code="version_not_found",
                )
            row = session.get(PromptLabel, (prompt.id, label))
            previous = row.version if row else None
            if previous == version:
                return previous, version
            now = datetime.now(UTC)
            if row is None:
                session.add(
                    PromptLabel(
                        prompt_id=prompt.id,
                        label=label,
                        version=version,
                        updated_at=now,
                        updated_by=actor_name(actor),
                    )
                )
            else:
                row.version, row.updated_at, row.updated_by = version, now, actor_name(actor)
            audit.record(
                session, actor, "prompt.label.set", "prompt", name,
                before={"label": label, "version": previous},
                after={"label": label, "version": version},
                project_id=project_id,
            )  # fmt: skip
        self._events.publish(Change(TOPIC, name, project_id))
        return previous, version

    def archive(self, project_id: str, name: str, *, actor: Principal | str) -> PromptSummary:
        """Hide the prompt from lists and the gateway; a new version restores it."""
        check_name(name)
        with self._db.session() as session:
            prompt = self._existing(session, project_id, name)
            changed = prompt.archived_at is None
            if changed:
                prompt.archived_at = datetime.now(UTC)
                audit.record(
                    session, actor, "prompt.archive", "prompt", name,
                    before={"archived": False}, after={"archived": True},
                    project_id=project_id,
                )  # fmt: skip
                session.flush()
            summary = self._summary(session, prompt)
        if changed:
            self._events.publish(Change(TOPIC, name, project_id))
        return summary

    # -- reads ---------------------------------------------------------------------

    def list_prompts(
        self, project_id: str, *, include_archived: bool = False
    ) -> list[PromptSummary]:
        query = select(Prompt).where(Prompt.project_id == project_id).order_by(Prompt.name)
        if not include_archived:
            query = query.where(Prompt.archived_at.is_(None))
        with self._db.session() as session:
            return [self._summary(session, prompt) for prompt in session.scalars(query)]

    def list_versions(self, project_id: str, name: str) -> list[VersionRecord]:
        """Every version, newest first."""
        check_name(name)
        with self._db.session() as session:
            prompt = self._existing(session, project_id, name)
            labels = self._labels(session, prompt.id)
            rows = session.scalars(
                select(PromptVersion)
                .where(PromptVersion.prompt_id == prompt.id)
                .order_by(PromptVersion.version.desc())
            )
            return [self._record(session, prompt, row, labels) for row in rows]

    def get(
        self, project_id: str, name: str, *, version: int | None = None, label: str | None = None
    ) -> VersionRecord:
        """One version, by number or by label (neither: the production label)."""
        check_name(name)
        if version is not None and label is not None:
            raise InvalidRequest("send either version or label, not both", param="label")
        with self._db.session() as session:
            prompt = self._existing(session, project_id, name)
            labels = self._labels(session, prompt.id)
            if version is None:
                wanted = label or DEFAULT_LABEL
                check_label(wanted)
                version = labels.get(wanted)
                if version is None:
                    raise label_not_found(name, wanted, labels)
            row = session.scalars(
                select(PromptVersion).where(
                    PromptVersion.prompt_id == prompt.id, PromptVersion.version == version
                )
            ).first()
            if row is None:
                raise NotFound(
                    f"prompt {name!r} has no version {version} "
                    f"(versions 1 to {labels.get(LATEST)})",
                    param="version",
                    code="version_not_found",
                )
            return self._record(session, prompt, row, labels)

    def diff(self, project_id: str, name: str, old: int, new: int) -> str:
        first = self.get(project_id, name, version=old)
        second = self.get(project_id, name, version=new)
        return diff_contents(name, (old, first.content), (new, second.content))

    def render(
        self,
        project_id: str,
        name: str,
        variables: dict[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> tuple[VersionRecord, list[dict[str, str]]]:
        """A preview: the messages the gateway would send for these variables."""
        record = self.get(project_id, name, version=version, label=label)
        return record, self.sandbox.compile(record.content).render(variables)

    def pointers(self, project_id: str, name: str) -> Pointers | None:
        """Labels and state of a prompt, for the gateway's cache; None if there is none."""
        with self._db.session() as session:
            prompt = self._prompt(session, project_id, name)
            if prompt is None:
                return None
            return Pointers(self._labels(session, prompt.id), prompt.archived_at is not None)

    def compiled(self, project_id: str, name: str, version: int) -> CompiledPrompt | None:
        """A version's compiled templates, for the gateway's cache; None if there is none."""
        with self._db.session() as session:
            row = session.scalars(
                select(PromptVersion)
                .join(Prompt, Prompt.id == PromptVersion.prompt_id)
                .where(
                    Prompt.project_id == project_id,
                    Prompt.name == name,
                    PromptVersion.version == version,
                )
            ).first()
            content = _content(row) if row else None
        return self.sandbox.compile(content) if content else None

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def _prompt(session: Session, project_id: str, name: str) -> Prompt | None:
        return session.scalars(
            select(Prompt).where(Prompt.project_id == project_id, Prompt.name == name)
        ).first()

    def _existing(self, session: Session, project_id: str, name: str) -> Prompt:
        prompt = self._prompt(session, project_id, name)
        if prompt is None:
            raise not_found(name)
        return prompt

    @staticmethod
    def _newest(session: Session, prompt_id: int) -> PromptVersion | None:
        return session.scalars(
            select(PromptVersion)
            .where(PromptVersion.prompt_id == prompt_id)
            .order_by(PromptVersion.version.desc())
            .limit(1)
        ).first()

    @staticmethod
    def _latest_number(session: Session, prompt_id: int) -> int:
        latest = session.scalar(
            select(func.max(PromptVersion.version)).where(PromptVersion.prompt_id == prompt_id)
        )
        return int(latest or 0)

    def _labels(self, session: Session, prompt_id: int) -> dict[str, int]:
        rows = session.scalars(select(PromptLabel).where(PromptLabel.prompt_id == prompt_id))
        labels = {row.label: row.version for row in rows}
        latest = self._latest_number(session, prompt_id)
        if latest:
            labels[LATEST] = latest
        return labels

    def _record(
        self,
        session: Session,
        prompt: Prompt,
        row: PromptVersion,
        labels: dict[str, int] | None = None,
    ) -> VersionRecord:
        labels = self._labels(session, prompt.id) if labels is None else labels
        pointing = tuple(sorted(label for label, v in labels.items() if v == row.version))
        return VersionRecord(
            prompt.name,
            row.version,
            _content(row),
            row.message,
            row.author,
            _utc(row.created_at),
            pointing,
        )

    def _summary(self, session: Session, prompt: Prompt) -> PromptSummary:
        newest = self._newest(session, prompt.id)
        return PromptSummary(
            prompt.name,
            newest.version if newest else 0,
            self._labels(session, prompt.id),
            _utc(prompt.created_at),
            _utc(newest.created_at if newest else prompt.created_at),
            _utc(prompt.archived_at) if prompt.archived_at else None,
        )


def label_not_found(name: str, label: str, labels: dict[str, int]) -> NotFound:
    known = ", ".join(sorted(labels)) or "none"
    return NotFound(
        f"prompt {name!r} has no label {label!r} (labels: {known}); point it at a version "
        f"with 'keel prompts label {name} {label} VERSION'",
        param="label",
        code="label_not_found",
    )


def _content(row: PromptVersion) -> PromptContent:
    return PromptContent.model_validate(
        {
            "messages": row.messages,
            "variables": row.variables,
            "allow_extra_variables": row.allow_extra,
            "config": row.config,
        }
    )
