"""JobStore: jobs, items, events and files in Keel's store (SQLite or PostgreSQL).

Synchronous, like every store service: executors call it from worker threads. Every write
an executor makes names the job lease it holds, and is refused once another worker took
the job over, so a worker that lost its lease can never record an item twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from keel.jobs.model import FINAL_STATES, Event, Item, Job, NewFile
from keel.jobs.tables import JobEventRow, JobItemRow, JobRow, StoredFileRow
from keel.store.db import Database

INTERRUPTED = "interrupted"


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; Keel writes only UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class Sent:
    """The item is about to be sent under this lease (one more attempt)."""

    item_id: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The item ended: done with its result, or failed with its error (kept with it)."""

    item_id: int
    ok: bool
    outcome: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Requeued:
    """The attempt failed in a way worth retrying; the error is kept until the next one."""

    item_id: int
    error: dict[str, Any]


Op = Sent | Finished | Requeued


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        project_id=row.project_id,
        key_id=row.key_id,
        params=dict(row.params),
        state=row.state,
        total=row.total,
        done=row.done,
        failed=row.failed,
        result=dict(row.result),
        error=row.error,
        created_at=aware(row.created_at) or utcnow(),
        started_at=aware(row.started_at),
        cancel_requested_at=aware(row.cancel_requested_at),
        finished_at=aware(row.finished_at),
        lease=row.lease,
    )


def _item(row: JobItemRow) -> Item:
    return Item(
        id=row.id,
        job_id=row.job_id,
        ordinal=row.ordinal,
        key=row.key,
        payload=dict(row.payload),
        state=row.state,
        attempts=row.attempts,
        result=row.result,
        error=row.error,
    )


class JobStore:
    def __init__(self, database: Database):
        self.database = database

    # -- creating and reading -------------------------------------------------------------

    def create(
        self,
        kind: str,
        project_id: str,
        key_id: str,
        params: dict[str, Any],
        items: Sequence[tuple[str, dict[str, Any]]],
        message: str | None = None,
    ) -> Job:
        """A queued job with its items (key, payload), all in one transaction; `message` is
        its first event (default: how many items it holds)."""
        now = utcnow()
        job_id = new_id(kind)
        with self.database.session() as session:
            row = JobRow(
                id=job_id,
                kind=kind,
                project_id=project_id,
                key_id=key_id,
                params=params,
                state="queued",
                total=len(items),
                done=0,
                failed=0,
                result={},
                created_at=now,
            )
            session.add(row)
            session.flush()
            session.add_all(
                JobItemRow(
                    job_id=job_id,
                    ordinal=i,
                    key=key,
                    payload=payload,
                    state="queued",
                    attempts=0,
                    updated_at=now,
                )
                for i, (key, payload) in enumerate(items)
            )
            session.add(
                JobEventRow(
                    job_id=job_id,
                    at=now,
                    level="info",
                    message=message or f"created with {len(items)} items",
                    data={},
                )
            )
            session.flush()
            return _job(row)

    def get(self, job_id: str, project_id: str | None = None) -> Job | None:
        with self.database.session() as session:
            row = session.get(JobRow, job_id)
            if row is None or (project_id is not None and row.project_id != project_id):
                return None
            return _job(row)

    def page(
        self,
        project_id: str | None = None,
        *,
        kind: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> tuple[list[Job], bool]:
        """Newest first, paged as OpenAI pages: after an id, and whether more remain."""
        with self.database.session() as session:
            query = select(JobRow)
            if project_id is not None:
                query = query.where(JobRow.project_id == project_id)
            if kind is not None:
                query = query.where(JobRow.kind == kind)
            if after is not None:
                anchor = session.get(JobRow, after)
                if anchor is not None:
                    query = query.where(
                        (JobRow.created_at < anchor.created_at)
                        | ((JobRow.created_at == anchor.created_at) & (JobRow.id < anchor.id))
                    )
            query = query.order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1)
            rows = session.scalars(query).all()
            return [_job(row) for row in rows[:limit]], len(rows) > limit

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[Event]:
        with self.database.session() as session:
            rows = session.scalars(
                select(JobEventRow)
                .where(JobEventRow.job_id == job_id, JobEventRow.id > after)
                .order_by(JobEventRow.id)
                .limit(limit)
            ).all()
            return [
                Event(r.id, aware(r.at) or utcnow(), r.level, r.message, dict(r.data)) for r in rows
            ]

    def add_event(
        self, job_id: str, message: str, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        with self.database.session() as session:
            _event(session, job_id, message, level, data)

    def items(self, job_id: str, states: Iterable[str] | None = None) -> list[Item]:
        """The job's items in their order (only those in `states` when given)."""
        with self.database.session() as session:
            query = select(JobItemRow).where(JobItemRow.job_id == job_id)
            if states is not None:
                query = query.where(JobItemRow.state.in_(list(states)))
            rows = session.scalars(query.order_by(JobItemRow.ordinal)).all()
            return [_item(row) for row in rows]

    def item_counts(self, job_id: str) -> dict[str, int]:
        with self.database.session() as session:
            rows = session.execute(
                select(JobItemRow.state, func.count())
                .where(JobItemRow.job_id == job_id)
                .group_by(JobItemRow.state)
            ).all()
            return {state: count for state, count in rows}

    # -- cancelling -----------------------------------------------------------------------

    def request_cancel(self, job_id: str, project_id: str | None = None) -> Job | None:
        """A queued job is cancelled at once; a running one is `cancelling` until its worker
        stops starting items. A finished job is left as it is."""
        now = utcnow()
        with self.database.session() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or (project_id is not None and row.project_id != project_id):
                return None
            if row.state == "queued":
                _cancel_items(session, job_id)
                row.state, row.finished_at, row.cancel_requested_at = "cancelled", now, now
                _event(session, job_id, "cancelled before it started")
            elif row.state == "running":
                row.state, row.cancel_requested_at = "cancelling", now
                _event(session, job_id, "cancel requested; no new item starts")
            return _job(row)

    # -- what an executor does ------------------------------------------------------------

    def claim(self, worker: str, lease_seconds: float, kinds: Iterable[str]) -> Job | None:
        """Take one job that needs a worker: queued, or held under a lease that ran out.

        Taking over from a worker that died, its items still marked `sent` are failed as
        interrupted, never sent again: nobody knows whether the upstream saw them.
        """
        now = utcnow()
        token = f"{worker}:{uuid.uuid4().hex[:12]}"
        with self.database.session() as session:
            candidates = session.scalars(
                select(JobRow.id)
                .where(
                    JobRow.kind.in_(list(kinds)),
                    JobRow.state.in_(["queued", "running", "cancelling"]),
                    (JobRow.lease_until.is_(None)) | (JobRow.lease_until < now),
                )
                .order_by(JobRow.created_at)
                .limit(5)
            ).all()
            for job_id in candidates:
                # Compare-and-set on the lease seen: two workers never both take a job.
                row = session.get(JobRow, job_id, with_for_update=True)
                if row is None or row.state in FINAL_STATES:
                    continue
                until = aware(row.lease_until)
                if until is not None and until >= now:
                    continue
                previous = row.lease  # read before the update, which refreshes `row`
                seen = JobRow.lease.is_(None) if previous is None else JobRow.lease == previous
                taken = session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, seen)
                    .values(lease=token, lease_until=now + timedelta(seconds=lease_seconds))
                )
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                if row.state == "queued":
                    row.state, row.started_at = "running", now
                    _event(session, job_id, "started", data={"worker": worker})
                elif previous is None:
                    _event(session, job_id, f"taken up by {worker}", data={"worker": worker})
                if previous is not None:
                    lost = _interrupt_sent(session, row, now)
                    _event(
                        session,
                        job_id,
                        f"resumed by {worker} after its worker stopped; "
                        f"{lost} items in flight then were failed as interrupted, not resent",
                        "warning",
                        {"worker": worker, "interrupted": lost},
                    )
                session.flush()
                session.refresh(row)
                return _job(row)
        return None

    def heartbeat(self, job_id: str, lease: str, lease_seconds: float) -> str | None:
        """Renew the lease; the job's state, or None when the lease is no longer this one's."""
        with self.database.session() as session:
            renewed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.lease == lease)
                .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
            )
            if renewed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return session.scalar(select(JobRow.state).where(JobRow.id == job_id))

    def next_items(self, job_id: str, after_ordinal: int, limit: int) -> list[Item]:
        """Queued items after an ordinal, in order (the executor pages through the job)."""
        with self.database.session() as session:
            rows = session.scalars(
                select(JobItemRow)
                .where(
                    JobItemRow.job_id == job_id,
                    JobItemRow.state == "queued",
                    JobItemRow.ordinal > after_ordinal,
                )
                .order_by(JobItemRow.ordinal)
                .limit(limit)
            ).all()
            return [_item(row) for row in rows]

    def write(self, job_id: str, lease: str, ops: Sequence[Op]) -> list[bool] | None:
        """Apply item changes in one transaction; None (nothing applied) when the lease is
        not this one's any more. With the job's row locked under this lease, nobody else
        moves its items: an item is marked sent only from queued, and ends only from sent
        under this lease. Each kind of change is one statement run for all its items."""
        now = utcnow()
        items = cast(Table, JobItemRow.__table__)
        sent: list[dict[str, Any]] = []
        ended: dict[str, list[dict[str, Any]]] = {"done": [], "failed": [], "queued": []}
        for op in ops:
            match op:
                case Sent(item_id):
                    sent.append({"b_id": item_id})
                case Finished(item_id, ok, outcome):
                    ended["done" if ok else "failed"].append({"b_id": item_id, "b_value": outcome})
                case Requeued(item_id, error):
                    ended["queued"].append({"b_id": item_id, "b_value": error})
        with self.database.session() as session:
            held = session.scalar(select(JobRow.lease).where(JobRow.id == job_id).with_for_update())
            if held != lease:
                return None
            if sent:
                session.execute(
                    update(items)
                    .where(
                        items.c.id == bindparam("b_id"),
                        items.c.job_id == job_id,
                        items.c.state == "queued",
                    )
                    .values(
                        state="sent", lease=lease, attempts=items.c.attempts + 1, updated_at=now
                    ),
                    sent,
                )
            for state, rows in ended.items():
                if not rows:
                    continue
                column = "result" if state == "done" else "error"
                session.execute(
                    update(items)
                    .where(
                        items.c.id == bindparam("b_id"),
                        items.c.job_id == job_id,
                        items.c.state == "sent",
                        items.c.lease == lease,
                    )
                    .values({"state": state, "updated_at": now, column: bindparam("b_value")}),
                    rows,
                )
            done, failed = len(ended["done"]), len(ended["failed"])
            if done or failed:
                session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id)
                    .values(done=JobRow.done + done, failed=JobRow.failed + failed)
                )
        return [True] * len(ops)

    def finish(
        self,
        job_id: str,
        lease: str,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        files: Sequence[NewFile] = (),
        error: str | None = None,
    ) -> Job | None:
        """End the job (and its remaining items when cancelled), storing the files it made
        and their ids in its result, all in one transaction; None when the lease is lost."""
        now = utcnow()
        with self.database.session() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease != lease:
                return None
            refs = dict(row.result)
            refs.update(result or {})
            for new in files:
                file_id = new_id("file")
                session.add(
                    StoredFileRow(
                        id=file_id,
                        project_id=row.project_id,
                        key_id=row.key_id,
                        purpose=new.purpose,
                        filename=new.filename,
                        size_bytes=len(new.content),
                        lines=new.lines,
                        content=new.content,
                        created_at=now,
                    )
                )
                refs[new.ref] = file_id
            if state == "cancelled":
                _cancel_items(session, job_id)
            row.state, row.result, row.error, row.finished_at = state, refs, error, now
            row.lease, row.lease_until = None, None
            # A job of one long step (fine-tuning) has no items to count.
            counts = f": {row.done} done, {row.failed} failed of {row.total}" if row.total else ""
            _event(
                session,
                job_id,
                f"{state}{counts}" + (f" ({error})" if error else ""),
                "error" if state == "failed" else "info",
            )
            session.flush()
            return _job(row)

    def interrupt_sent(self, job_id: str, lease: str) -> int | None:
        """Before a job ends: items still `sent` (their end could not be recorded, the store
        failed meanwhile) are not known to be unsent, so they end as interrupted, as those a
        crash left in flight do. None when the lease is lost."""
        with self.database.session() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease != lease:
                return None
            lost = _interrupt_sent(session, row, utcnow())
            if lost:
                _event(
                    session,
                    job_id,
                    f"{lost} items whose end was not recorded were failed "
                    "as interrupted, not resent",
                    "warning",
                    {"interrupted": lost},
                )
            return lost

    def release(self, job_id: str, lease: str, reason: str | None = None) -> None:
        """Give the lease back without finishing (the process is stopping, or items were put
        back for a retry): any worker takes the job up at once, not after the lease runs out,
        and nothing is in flight under it to be failed as interrupted."""
        with self.database.session() as session:
            released = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.lease == lease)
                .values(lease=None, lease_until=None)
            )
            if reason is not None and released.rowcount == 1:  # type: ignore[attr-defined]
                _event(session, job_id, f"handed back: {reason}")

    def counts_by_state(self) -> dict[str, int]:
        with self.database.session() as session:
            rows = session.execute(select(JobRow.state, func.count()).group_by(JobRow.state))
            return {state: count for state, count in rows.all()}


def _event(
    session: Session,
    job_id: str,
    message: str,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        JobEventRow(job_id=job_id, at=utcnow(), level=level, message=message, data=data or {})
    )


def _cancel_items(session: Session, job_id: str) -> None:
    session.execute(
        update(JobItemRow)
        .where(JobItemRow.job_id == job_id, JobItemRow.state == "queued")
        .values(state="cancelled", updated_at=utcnow())
    )


def _interrupt_sent(session: Session, job: JobRow, now: datetime) -> int:
    """Fail the items an earlier lease had sent without recording how they ended."""
    error = {
        "code": INTERRUPTED,
        "message": "the worker stopped while this item was in flight; it is not sent again, "
        "so it is never sent twice: submit it again if it is still wanted",
    }
    result = session.execute(
        update(JobItemRow)
        .where(JobItemRow.job_id == job.id, JobItemRow.state == "sent")
        .values(state="failed", error=error, updated_at=now)
    )
    lost = int(result.rowcount)  # type: ignore[attr-defined]
    job.failed += lost
    return lost
