"""Spend totals in the database: added to in batches, read once at start to seed counters."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from keel.limits.tables import SpendTotal
from keel.store.db import Database

SpendDeltas = dict[tuple[str, str], tuple[float, int]]  # (subject, period) → (amount, tokens)


class SpendStore:
    def __init__(self, database: Database):
        self._db = database

    def add(self, deltas: SpendDeltas) -> None:
        """Add each delta to its row (creating it); call from a worker thread."""
        try:
            self._add(deltas)
        except IntegrityError:
            self._add(deltas)  # another replica created one of the rows first: now it exists

    def _add(self, deltas: SpendDeltas) -> None:
        now = datetime.now(UTC)
        with self._db.session() as session:
            for (subject, period), (amount, tokens) in deltas.items():
                row = session.scalar(
                    select(SpendTotal)
                    .where(SpendTotal.subject == subject, SpendTotal.period == period)
                    .with_for_update()
                )
                if row is None:
                    session.add(SpendTotal(subject=subject, period=period, amount=amount,
                                           tokens=tokens, updated_at=now))  # fmt: skip
                    session.flush()
                else:
                    row.amount += amount
                    row.tokens += tokens
                    row.updated_at = now

    def totals(self, periods: list[str]) -> list[tuple[str, str, float, int]]:
        """(subject, period, amount, tokens) of every row in the given periods."""
        with self._db.session() as session:
            rows = session.scalars(select(SpendTotal).where(SpendTotal.period.in_(periods)))
            return [(r.subject, r.period, r.amount, r.tokens) for r in rows]
