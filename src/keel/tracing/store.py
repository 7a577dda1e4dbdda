"""Reads and writes of the trace tables: batch inserts for the recorder, queries for /api.

All methods are synchronous and run in worker threads. Inserts ignore rows that exist
already, so a batch may be written twice (a retry, a replayed spill file) harmlessly.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import and_, delete, exc, func, or_, select, tuple_

from keel.errors import InvalidRequest
from keel.store.db import Database
from keel.store.inserts import MultiRowInsert, driver_cursor
from keel.tracing.convert import Converted
from keel.tracing.tables import AttemptFailureRow, ScoreRow, SpansRow, TraceRow

PREVIEW_CHARS = 300
_LIST_COLUMNS = [
    c for c in TraceRow.__table__.c if c.key not in ("input", "output")
]  # content comes back as previews on list pages


TRACE_COLUMNS = tuple(str(c.name) for c in TraceRow.__table__.c)
SPAN_COLUMNS = tuple(str(c.name) for c in SpansRow.__table__.c)
FAILURE_COLUMNS = tuple(str(c.name) for c in AttemptFailureRow.__table__.c)
_METADATA = TRACE_COLUMNS.index("metadata")
# Text columns filled from what a client or an upstream sends; the others hold names Keel
# made or validated (and a NUL there would still only cost its own record: quarantine).
_CLIENT_TEXT = tuple(TRACE_COLUMNS.index(c) for c in ("model", "user", "session_id", "input",
                                                      "output"))  # fmt: skip
_trace_values = itemgetter(*TRACE_COLUMNS)

# PostgreSQL text cannot hold NUL (U+0000). Both stores keep U+FFFD (the replacement
# character) in its place, so a trace reads the same from either (docs/observability.md).
NUL = "\x00"
NUL_STORED_AS = "\ufffd"
# A NUL escaped in JSON text (`\u0000`), unless its backslash is itself escaped (`\\u0000`).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


# Traces deleted per transaction by retention: short, so the trace writer's inserts (and
# on SQLite every other writer) wait a few milliseconds at most for the write lock.
PRUNE_CHUNK = 500


def _trace_row(row: dict[str, Any]) -> list[Any]:
    """The row's values in column order, the metadata as JSON text, NUL replaced."""
    try:
        values = list(_trace_values(row))
    except KeyError:  # a row without the newer columns (spilled by an older Keel)
        values = [row.get(c) for c in TRACE_COLUMNS]
    for index in _CLIENT_TEXT:
        value = values[index]
        if value.__class__ is str and NUL in value:
            values[index] = value.replace(NUL, NUL_STORED_AS)
    values[_METADATA] = _json_text(orjson.dumps(row["metadata"]).decode())
    return values


def _json_text(text: str) -> str:
    """JSON text with every NUL it encodes replaced: stored as is, an escaped NUL would
    come back as NUL, and PostgreSQL refuses to read one out of a JSON value as text."""
    if "\\u0000" not in text:
        return text
    return _JSON_NUL.sub(lambda m: m[1] + "\\ufffd", text)


def store_unreachable(error: BaseException) -> bool:
    """Whether a failed write means the store is away (write the batch again later) rather
    than that something in the batch is bad (find it, keep the rest).

    Batch inserts run on the driver's cursor, so their errors are the driver's own:
    PEP 249 names OperationalError and InterfaceError the same in every driver.
    """
    if isinstance(error, OSError | exc.OperationalError | exc.InterfaceError
                  | exc.DisconnectionError | exc.TimeoutError):  # fmt: skip
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return any(k.__name__ in ("OperationalError", "InterfaceError") for k in type(error).__mro__)


def _id_bound(before_us: int) -> str:
    """Every trace started before `before_us` has an id below this one: ids begin with
    their start in milliseconds (12 hex digits), so the primary key is a time index."""
    return f"{-(-before_us // 1000):012x}"


def encode_cursor(start_us: int, trace_id: str) -> str:
    return base64.urlsafe_b64encode(f"{start_us}:{trace_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a cursor names; a cursor Keel did not hand out is a 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        start, trace_id = raw.split(":", 1)
        position = int(start)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest(
            "invalid cursor; pass the next_cursor of the previous page unchanged", param="cursor"
        ) from None
    if not 0 <= position < 2**62 or len(trace_id) > 32:
        raise InvalidRequest("invalid cursor", param="cursor")
    return position, trace_id


@dataclass(frozen=True)
class TraceFilter:
    since_us: int | None = None
    until_us: int | None = None
    model: str | None = None  # the requested model, the route or the target
    key_id: str | None = None
    user: str | None = None
    session_id: str | None = None
    prompt: str | None = None  # NAME or NAME@VERSION
    status: str | None = None
    min_latency_ms: float | None = None
    min_cost: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    guard_action: str | None = None  # allow | flag | redact | block
    cache: str | None = None  # hit-exact | hit-semantic | miss


def _conditions(project_id: str, f: TraceFilter) -> list[Any]:
    t = TraceRow
    where: list[Any] = [t.project_id == project_id]
    if f.since_us is not None:
        where.append(t.start_us >= f.since_us)
    if f.until_us is not None:
        where.append(t.start_us < f.until_us)
    if f.model:
        where.append(or_(t.model == f.model, t.route == f.model, t.target == f.model))
    if f.key_id:
        where.append(t.key_id == f.key_id)
    if f.user:
        where.append(t.user == f.user)
    if f.session_id:
        where.append(t.session_id == f.session_id)
    if f.prompt:
        name, _, version = f.prompt.partition("@")
        where.append(t.prompt_name == name)
        if version:
            if not version.isdigit() or len(version) > 9:
                raise InvalidRequest("prompt must be NAME or NAME@VERSION", param="prompt")
            where.append(t.prompt_version == int(version))
    if f.status:
        where.append(t.status == f.status)
    if f.guard_action:
        where.append(t.guard_action == f.guard_action)
    if f.cache:
        where.append(t.cache == f.cache)
    if f.min_latency_ms is not None:
        where.append(t.duration_ms >= f.min_latency_ms)
    if f.min_cost is not None:
        where.append(t.cost >= f.min_cost)
    for key, value in f.metadata.items():
        where.append(t.meta[key].as_string() == value)
    if f.text:
        escaped = f.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        where.append(or_(t.input.like(pattern, escape="\\"), t.output.like(pattern, escape="\\")))
    return where


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + "…"


def _summary(row: Any, input_text: str | None, output_text: str | None) -> dict[str, Any]:
    data = {str(c.key): getattr(row, c.key) for c in _LIST_COLUMNS}
    data["start_time"] = _iso(data["start_us"])
    data["input_preview"] = _preview(input_text)
    data["output_preview"] = _preview(output_text)
    return data


def _iso(us: int) -> str:
    seconds, micro = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}Z"


def _score(row: Any) -> dict[str, Any]:
    value: Any = row.number
    if row.kind == "categorical":
        value = row.label
    elif row.kind == "boolean":
        value = row.flag
    return {
        "id": row.id, "name": row.name, "kind": row.kind, "value": value,
        "comment": row.comment, "source": row.source, "author": row.author,
        "created_time": _iso(row.created_us),
    }  # fmt: skip


class TraceStore:
    def __init__(self, database: Database):
        self._db = database
        dialect = database.backend
        self._insert_traces = MultiRowInsert("traces", TRACE_COLUMNS, dialect)
        self._insert_spans = MultiRowInsert("trace_spans", SPAN_COLUMNS, dialect)
        self._insert_failures = MultiRowInsert("trace_attempt_failures", FAILURE_COLUMNS, dialect)

    @property
    def database(self) -> Database:
        return self._db

    def write(self, batch: Iterable[Converted]) -> None:
        """Insert traces, their spans and their failed attempts in one transaction; existing
        ids are skipped.

        Straight through the driver: this runs for every request, and SQLAlchemy's
        per-row parameter processing would cost more than the insert itself.
        """
        traces: list[list[Any]] = []
        spans: list[tuple[str, str]] = []
        failures: list[tuple[Any, ...]] = []
        for item in batch:
            trace = item.trace
            traces.append(_trace_row(trace))
            spans.append((trace["trace_id"], _json_text(item.spans)))
            failures.extend(
                (
                    trace["trace_id"],
                    seq,
                    trace["project_id"],
                    trace["start_us"],
                    target[:200],
                    error[:64],
                )
                for seq, (target, error) in enumerate(item.errors)
            )
        if not traces:
            return
        with driver_cursor(self._db) as cursor:
            self._insert_traces.run(cursor, traces)
            self._insert_spans.run(cursor, spans)
            if failures:
                self._insert_failures.run(cursor, failures)

    # -- retention (keel.tracing.retention) --------------------------------------------

    name = "traces"

    def count_before(self, before_us: int) -> int:
        """Traces (of every project) started before `before_us`."""
        t = TraceRow
        query = select(func.count()).where(
            t.trace_id < _id_bound(before_us), t.start_us < before_us
        )
        with self._db.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def boundary(self, keep: int) -> int | None:
        """A time before which pruning leaves the `keep` newest traces; None: no more."""
        query = select(TraceRow.start_us).order_by(TraceRow.trace_id.desc()).limit(1).offset(keep)
        with self._db.engine.connect() as connection:
            start = connection.execute(query).scalar()
        return None if start is None else int(start) + 1

    def prune(self, before_us: int, limit: int = PRUNE_CHUNK) -> int:
        """Delete up to `limit` of the oldest traces started before `before_us`, with their
        spans and scores, in one short transaction; returns how many went."""
        t = TraceRow
        found = (
            select(t.trace_id, t.project_id)
            .where(t.trace_id < _id_bound(before_us), t.start_us < before_us)
            .order_by(t.trace_id)
            .limit(limit)
        )
        # Read first, then a transaction that only writes: on SQLite a transaction that
        # reads and then writes fails at once when another writer committed meanwhile,
        # while one that starts by writing waits its turn (busy_timeout).
        with self._db.engine.connect() as connection:
            rows = connection.execute(found).all()
        if not rows:
            return 0
        ids = [row.trace_id for row in rows]
        by_project: dict[str, list[str]] = {}
        for row in rows:
            by_project.setdefault(row.project_id, []).append(row.trace_id)
        with self._db.engine.begin() as connection:
            connection.execute(delete(SpansRow).where(SpansRow.trace_id.in_(ids)))
            connection.execute(delete(AttemptFailureRow).where(AttemptFailureRow.trace_id.in_(ids)))
            for project_id, its in by_project.items():  # scores are indexed by project
                connection.execute(
                    delete(ScoreRow).where(
                        ScoreRow.project_id == project_id, ScoreRow.trace_id.in_(its)
                    )
                )
            deleted = connection.execute(delete(t).where(t.trace_id.in_(ids))).rowcount
        return int(deleted)

    # -- queries --------------------------------------------------------------------------

    def count(self, project_id: str | None = None) -> int:
        query = select(func.count()).select_from(TraceRow)
        if project_id is not None:
            query = query.where(TraceRow.project_id == project_id)
        with self._db.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def exists(self, project_id: str, trace_id: str) -> bool:
        query = select(TraceRow.trace_id).where(
            TraceRow.trace_id == trace_id, TraceRow.project_id == project_id
        )
        with self._db.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def list(
        self, project_id: str, f: TraceFilter, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; returns the page and the cursor of the next one (None at the end)."""
        t = TraceRow
        where = _conditions(project_id, f)
        if cursor is not None:
            start, trace_id = decode_cursor(cursor)
            where.append(tuple_(t.start_us, t.trace_id) < tuple_(start, trace_id))
        query = (
            select(*_LIST_COLUMNS, t.input, t.output)
            .where(and_(*where))
            .order_by(t.start_us.desc(), t.trace_id.desc())
            .limit(limit + 1)
        )
        with self._db.engine.connect() as connection:
            rows = connection.execute(query).all()
        page = [_summary(row, row.input, row.output) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last.start_us, last.trace_id)
        return page, next_cursor

    def contents(
        self,
        project_id: str,
        f: TraceFilter,
        *,
        limit: int,
        score: tuple[str, float | None, float | None] | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Newest first, whole: each matching trace's columns with its full input and output
        (datasets are built from these). `score`: (name, min, max) of a score it must have."""
        t = TraceRow
        where = _conditions(project_id, f)
        if score is not None:
            name, low, high = score
            scored = select(ScoreRow.trace_id).where(
                ScoreRow.project_id == project_id, ScoreRow.name == name
            )
            if low is not None:
                scored = scored.where(ScoreRow.number >= low)
            if high is not None:
                scored = scored.where(ScoreRow.number <= high)
            where.append(t.trace_id.in_(scored))
        query = (
            select(*TraceRow.__table__.c)
            .where(and_(*where))
            .order_by(t.start_us.desc(), t.trace_id.desc())
            .limit(limit)
        )
        with self._db.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [{str(k): v for k, v in row._mapping.items()} for row in rows]

    def score_summary(
        self, project_id: str, since_us: int, source: str, author_like: str = "%"
    ) -> builtins.list[dict[str, Any]]:
        """Per route and score name: how many scores of `source` whose author matches the
        LIKE pattern `author_like` traces started since `since_us` carry, and their mean
        (online evaluation's figures)."""
        t, s = TraceRow, ScoreRow
        query = (
            select(t.route, s.name, func.count(), func.avg(s.number))
            .join(t, and_(t.trace_id == s.trace_id, t.project_id == s.project_id))
            .where(
                s.project_id == project_id,
                s.source == source,
                s.author.like(author_like),
                t.start_us >= since_us,
            )
            .group_by(t.route, s.name)
            .order_by(t.route, s.name)
        )
        with self._db.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            {"route": route, "name": name, "count": int(count),
             "mean": None if mean is None else float(mean)}
            for route, name, count, mean in rows
        ]  # fmt: skip

    def feedback_of(
        self, project_id: str, trace_ids: Sequence[str], sources: Sequence[str]
    ) -> dict[str, builtins.list[float]]:
        """Per trace, the values of its numeric and boolean scores of `sources` (true: 1.0);
        traces without any are left out. Categorical scores carry no value to average."""
        s = ScoreRow
        found: dict[str, builtins.list[float]] = {}
        with self._db.engine.connect() as connection:
            for start in range(0, len(trace_ids), 500):
                rows = connection.execute(
                    select(s.trace_id, s.number, s.flag).where(
                        s.project_id == project_id,
                        s.source.in_(sources),
                        s.trace_id.in_(trace_ids[start : start + 500]),
                    )
                ).all()
                for trace_id, number, flag in rows:
                    value = number if number is not None else None if flag is None else float(flag)
                    if value is not None:
                        found.setdefault(trace_id, []).append(float(value))
        return found

    def get(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        """The trace with its spans as a tree and its scores; None outside the project."""
        with self._db.engine.connect() as connection:
            row = connection.execute(
                select(*TraceRow.__table__.c).where(
                    TraceRow.trace_id == trace_id, TraceRow.project_id == project_id
                )
            ).first()
            if row is None:
                return None
            spans = connection.execute(
                select(SpansRow.spans).where(SpansRow.trace_id == trace_id)
            ).scalar()
            scores = connection.execute(
                select(*ScoreRow.__table__.c)
                .where(ScoreRow.trace_id == trace_id, ScoreRow.project_id == project_id)
                .order_by(ScoreRow.id)
            ).all()
        # Keys as plain str: a quoted column name (`user`) is a str subclass orjson refuses.
        data = {str(k): v for k, v in row._mapping.items()}
        data["start_time"] = _iso(data["start_us"])
        data["spans"] = span_tree(orjson.loads(spans) if spans else [])
        data["scores"] = [_score(s) for s in scores]
        return data

    def add_score(self, project_id: str, trace_id: str, score: dict[str, Any]) -> dict[str, Any]:
        with self._db.session() as session:
            row = ScoreRow(project_id=project_id, trace_id=trace_id,
                           created_us=time.time_ns() // 1000, **score)  # fmt: skip
            session.add(row)
            session.flush()
            return _score(row)


def span_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans nested under their parents (`children`), roots first, each ordered by start."""
    nodes: dict[str, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    for span in sorted(spans, key=lambda s: int(s["start_ns"])):
        start_us, end_us = span["start_ns"] // 1000, span["end_ns"] // 1000
        node = {
            "span_id": span["span_id"], "parent_id": span["parent_id"], "name": span["name"],
            "kind": span["kind"], "start_us": start_us, "end_us": end_us,
            "duration_ms": (span["end_ns"] - span["start_ns"]) / 1e6, "status": span["status"],
            "attributes": span["attributes"], "children": [],
        }  # fmt: skip
        nodes[node["span_id"]] = node
        order.append(node)
    roots: list[dict[str, Any]] = []
    for node in order:
        parent = nodes.get(node["parent_id"]) if node["parent_id"] else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots
