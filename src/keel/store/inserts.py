"""INSERT of many rows in one statement, skipping rows whose key exists: the batch writers'
way into the store (traces, insight vectors), straight through the driver.

One statement per chunk rather than executemany or the ORM: the SQLite driver gives the GIL
up and takes it back around every row it steps, and each take-back waits on the event loop;
one statement does the whole chunk in C with the GIL released once. The ORM's per-row unit
of work would cost more Python, under the GIL, than the insert itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

from keel.store.db import Database

# Parameters per statement: below SQLite's limit (32766) and PostgreSQL's (65535).
MAX_PARAMETERS = 30_000
# Rows per statement, at most: every statement size stays prepared in each pooled
# connection's statement cache (a 500-row trace INSERT is ~1.6 MB in SQLite); sizes up to
# 64 keep that under half a megabyte per connection.
MAX_ROWS_PER_STATEMENT = 64


@contextmanager
def driver_cursor(database: Database) -> Iterator[Any]:
    """The driver's own cursor, in one transaction that commits when the block ends."""
    with database.engine.begin() as connection:
        cursor = connection.connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()


class MultiRowInsert:
    """INSERT of many rows in one statement per chunk, skipping rows whose key exists.

    Chunks have power-of-two sizes: batches come in any size, and a statement of a new
    size is thousands of parameters to parse again, while these few sizes are parsed
    once and reused (sqlite3's statement cache, PostgreSQL's prepared statements).
    """

    def __init__(self, table: str, columns: tuple[str, ...], dialect: str):
        self.width = len(columns)
        fits = min(MAX_PARAMETERS // self.width, MAX_ROWS_PER_STATEMENT)
        self.rows_per_statement = 1 << (fits.bit_length() - 1)
        names = ", ".join(f'"{c}"' for c in columns)
        mark = "%s" if dialect == "postgresql" else "?"
        self._one = "(" + ", ".join([mark] * self.width) + ")"
        if dialect == "postgresql":
            self._head, self._tail = (
                f"INSERT INTO {table} ({names}) VALUES ",
                " ON CONFLICT DO NOTHING",
            )
        else:
            self._head, self._tail = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ", ""
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        text = self._sql.get(rows)
        if text is None:
            text = self._sql[rows] = self._head + ", ".join([self._one] * rows) + self._tail
        return text

    def run(self, cursor: Any, rows: Sequence[Sequence[Any]]) -> int:
        """Insert `rows` (values in column order); the number the database took."""
        size, start, end = self.rows_per_statement, 0, len(rows)
        taken = 0
        while start < end:
            while size > end - start:
                size //= 2
            chunk = rows[start : start + size]
            cursor.execute(self.sql(size), list(chain.from_iterable(chunk)))
            taken += max(cursor.rowcount, 0)
            start += size
        return taken
