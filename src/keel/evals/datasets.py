"""DatasetService: versioned datasets of evaluation items, built by hand, from files or from
traces. A version never changes: adding or removing items makes the next one, in one
transaction with its items, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from keel.auth import audit
from keel.errors import InvalidRequest, NotFound
from keel.evals.items import NewItem
from keel.evals.tables import DatasetItemRow, DatasetRow, DatasetVersionRow
from keel.store.db import Database
from keel.tracing.service import Tracing
from keel.tracing.store import TraceFilter

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_FROM_TRACES = 10_000


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    items: int
    source: str
    note: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Dataset:
    id: str
    name: str
    description: str
    latest_version: int
    created_at: datetime
    versions: list[Version] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    input: dict[str, Any]
    expected: Any
    context: list[str] | None
    metadata: dict[str, Any]
    source_trace_id: str | None
    added_version: int


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _item(row: DatasetItemRow) -> Item:
    return Item(row.id, dict(row.input), row.expected, row.context, dict(row.meta),
                row.source_trace_id, row.added_version)  # fmt: skip


def _in_version(version: int) -> Any:
    r = DatasetItemRow
    return and_(
        r.added_version <= version, or_(r.removed_version.is_(None), r.removed_version > version)
    )


def _not_found(name: str) -> NotFound:
    return NotFound(
        f"no dataset '{name}' in this project; list them with GET /api/datasets "
        "or 'keel eval datasets'",
        param="dataset",
        code="dataset_not_found",
    )


class DatasetService:
    def __init__(self, database: Database, tracing: Tracing):
        self.database = database
        self.tracing = tracing

    # -- reading --------------------------------------------------------------------------

    def list(self, project_id: str) -> builtins.list[Dataset]:
        with self.database.session() as session:
            rows = session.scalars(
                select(DatasetRow)
                .where(DatasetRow.project_id == project_id)
                .order_by(DatasetRow.name)
            ).all()
            return [self._dataset(session, row, versions=False) for row in rows]

    def get(self, project_id: str, name: str) -> Dataset:
        with self.database.session() as session:
            return self._dataset(session, self._row(session, project_id, name), versions=True)

    def items(
        self,
        project_id: str,
        name: str,
        version: int | None = None,
        *,
        limit: int | None = None,
        after: int = 0,
    ) -> tuple[int, builtins.list[Item]]:
        """The version (latest by default) and its items in order; `after`: an item id."""
        with self.database.session() as session:
            row = self._row(session, project_id, name)
            chosen = self._version(row, version)
            query = (
                select(DatasetItemRow)
                .where(DatasetItemRow.dataset_id == row.id, _in_version(chosen))
                .where(DatasetItemRow.id > after)
                .order_by(DatasetItemRow.id)
            )
            if limit is not None:
                query = query.limit(limit)
            return chosen, [_item(r) for r in session.scalars(query)]

    def item(self, project_id: str, name: str, item_id: int) -> Item:
        with self.database.session() as session:
            row = self._row(session, project_id, name)
            found = session.get(DatasetItemRow, item_id)
            if found is None or found.dataset_id != row.id:
                raise NotFound(f"no item {item_id} in dataset '{name}'", param="item_id")
            return _item(found)

    # -- writing --------------------------------------------------------------------------

    def create(
        self,
        project_id: str,
        name: str,
        *,
        description: str = "",
        items: Sequence[NewItem] = (),
        source: str = "api",
        created_by: str = "",
    ) -> Dataset:
        """A new dataset; with items, its version 1 is made in the same transaction."""
        with self.database.session() as session:
            exists = session.scalar(
                select(DatasetRow.id).where(
                    DatasetRow.project_id == project_id, DatasetRow.name == name
                )
            )
            if exists is not None:
                raise InvalidRequest(
                    f"a dataset named '{name}' exists already; add items to it (a new "
                    "version) or pick another name",
                    param="name",
                    code="dataset_exists",
                )
            row = DatasetRow(
                id=f"ds_{uuid.uuid4().hex[:24]}", project_id=project_id, name=name,
                description=description, latest_version=0, created_at=datetime.now(UTC),
            )  # fmt: skip
            session.add(row)
            session.flush()
            after: dict[str, Any] = {"description": description}
            if items:
                version = self._new_version(session, row, items, (), source, "", created_by)
                after.update(version=version.version, items=version.items, source=source)
            _audit(session, project_id, created_by, "dataset.create", name, after)
            return self._dataset(session, row, versions=True)

    def add_items(
        self,
        project_id: str,
        name: str,
        items: Sequence[NewItem],
        *,
        remove: Sequence[int] = (),
        source: str = "api",
        note: str = "",
        created_by: str = "",
    ) -> Version:
        """The next version: the latest's items, less `remove` (item ids), plus `items`."""
        if not items and not remove:
            raise InvalidRequest("nothing to change: send items to add or ids to remove",
                                 param="items")  # fmt: skip
        with self.database.session() as session:
            row = self._row(session, project_id, name, lock=True)
            version = self._new_version(session, row, items, remove, source, note, created_by)
            _audit(session, project_id, created_by, "dataset.version", name,
                   {"version": version.version, "items": version.items, "added": len(items),
                    "removed": len(remove), "source": source})  # fmt: skip
            return version

    def from_traces(
        self,
        project_id: str,
        name: str,
        filters: TraceFilter,
        *,
        limit: int = 1000,
        score: tuple[str, float | None, float | None] | None = None,
        expected_from_output: bool = True,
        created_by: str = "",
        note: str = "",
    ) -> Version:
        """Items from the traces matching `filters` (newest first, up to `limit`), in one
        version of dataset `name` (created when it does not exist)."""
        if not 1 <= limit <= MAX_FROM_TRACES:
            raise InvalidRequest(f"limit must be 1..{MAX_FROM_TRACES}", param="limit")
        traces: builtins.list[dict[str, Any]] = self.tracing.contents(
            project_id, filters, limit=limit, score=score
        )
        items = [
            item
            for trace in traces
            if (item := trace_item(trace, expected_from_output)) is not None
        ]
        if not items:
            raise InvalidRequest(
                "no chat trace with content matches the filter; widen it (time window, "
                "route, status) or check that traces keep content",
                param="filter",
                code="no_traces",
            )
        with self.database.session() as session:
            row = session.scalar(
                select(DatasetRow)
                .where(DatasetRow.project_id == project_id, DatasetRow.name == name)
                .with_for_update()
            )
            if row is None:
                row = DatasetRow(
                    id=f"ds_{uuid.uuid4().hex[:24]}", project_id=project_id, name=name,
                    description="", latest_version=0, created_at=datetime.now(UTC),
                )  # fmt: skip
                session.add(row)
                session.flush()
            version = self._new_version(session, row, items, (), "traces", note, created_by)
            # Training and evaluation data made from traffic: the audit log says who and when.
            _audit(session, project_id, created_by, "dataset.from_traces", name,
                   {"version": version.version, "items": version.items})  # fmt: skip
            return version

    def delete(self, project_id: str, name: str, *, deleted_by: str = "") -> None:
        with self.database.session() as session:
            row = self._row(session, project_id, name)
            before = {"versions": row.latest_version, "description": row.description}
            session.delete(row)
            audit.record(session, _actor(deleted_by), "dataset.delete", "dataset", name,
                         before=before, project_id=project_id)  # fmt: skip

    # -- inside a transaction ----------------------------------------------------------

    def _row(self, session: Session, project_id: str, name: str, lock: bool = False) -> DatasetRow:
        query = select(DatasetRow).where(
            DatasetRow.project_id == project_id, DatasetRow.name == name
        )
        row = session.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise _not_found(name)
        return row

    @staticmethod
    def _version(row: DatasetRow, version: int | None) -> int:
        chosen = row.latest_version if version is None else version
        if not 1 <= chosen <= row.latest_version:
            if row.latest_version == 0:
                raise InvalidRequest(
                    f"dataset '{row.name}' has no items yet; add some first",
                    param="version",
                    code="empty_dataset",
                )
            raise NotFound(
                f"dataset '{row.name}' has versions 1..{row.latest_version}, not {version}",
                param="version",
            )
        return chosen

    def _new_version(
        self,
        session: Session,
        row: DatasetRow,
        items: Sequence[NewItem],
        remove: Sequence[int],
        source: str,
        note: str,
        created_by: str,
    ) -> Version:
        version = row.latest_version + 1
        if remove:
            current = set(
                session.scalars(
                    select(DatasetItemRow.id).where(
                        DatasetItemRow.dataset_id == row.id,
                        DatasetItemRow.id.in_(list(remove)),
                        _in_version(row.latest_version),
                    )
                )
            )
            missing = sorted(set(remove) - current)
            if missing:
                raise NotFound(
                    f"items {missing[:10]} are not in the latest version of '{row.name}'",
                    param="remove",
                )
            session.execute(
                update(DatasetItemRow)
                .where(DatasetItemRow.id.in_(list(current)))
                .values(removed_version=version)
            )
        if items:
            session.execute(
                insert(DatasetItemRow),
                [
                    {"dataset_id": row.id, "added_version": version, "removed_version": None,
                     "input": item.input, "expected": item.expected, "context": item.context,
                     "meta": item.metadata, "source_trace_id": item.source_trace_id}
                    for item in items
                ],
            )  # fmt: skip
        before = 0
        if row.latest_version:
            before = (
                session.scalar(
                    select(DatasetVersionRow.items).where(
                        DatasetVersionRow.dataset_id == row.id,
                        DatasetVersionRow.version == row.latest_version,
                    )
                )
                or 0
            )
        count = before - len(remove) + len(items)
        now = datetime.now(UTC)
        session.add(
            DatasetVersionRow(dataset_id=row.id, version=version, items=count, source=source[:200],
                              note=note, created_by=created_by[:64], created_at=now)
        )  # fmt: skip
        row.latest_version = version
        return Version(version, count, source, note, created_by, now)

    def _dataset(self, session: Session, row: DatasetRow, *, versions: bool) -> Dataset:
        found: builtins.list[Version] = []
        if versions:
            found = [
                Version(v.version, v.items, v.source, v.note, v.created_by, _aware(v.created_at))
                for v in session.scalars(
                    select(DatasetVersionRow)
                    .where(DatasetVersionRow.dataset_id == row.id)
                    .order_by(DatasetVersionRow.version.desc())
                )
            ]
        return Dataset(row.id, row.name, row.description, row.latest_version,
                       _aware(row.created_at), found)  # fmt: skip

    def count(self, project_id: str) -> int:
        with self.database.session() as session:
            return int(
                session.scalar(select(func.count()).where(DatasetRow.project_id == project_id)) or 0
            )


def trace_item(trace: dict[str, Any], expected_from_output: bool) -> NewItem | None:
    """A chat trace as an item: its messages as input, its answer as expected (optionally)."""
    if trace.get("operation") != "chat" or not trace.get("input"):
        return None
    try:
        messages = orjson.loads(trace["input"])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(messages, list) or not messages:
        return None
    metadata: dict[str, Any] = {
        key: trace[key] for key in ("route", "model", "target") if trace.get(key) is not None
    }
    if trace.get("prompt_name"):
        metadata["prompt"] = f"{trace['prompt_name']}@{trace['prompt_version']}"
    metadata.update({f"trace.{k}": v for k, v in (trace.get("metadata") or {}).items()})
    expected = trace.get("output") if expected_from_output and trace.get("status") == "ok" else None
    return NewItem({"messages": messages}, expected, None, metadata, trace["trace_id"])


def _actor(key_id: str) -> str:
    return f"key:{key_id}" if key_id else "system"


def _audit(session: Session, project_id: str, key_id: str, action: str, name: str,
           after: dict[str, Any]) -> None:  # fmt: skip
    """Datasets are what evaluations and fine-tuning learn from: who changed one, and when,
    is in the audit log, written in the change's own transaction."""
    audit.record(session, _actor(key_id), action, "dataset", name, after=after,
                 project_id=project_id)  # fmt: skip
