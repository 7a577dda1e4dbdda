from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from keel.store import migrate
from keel.store.db import Database
from keel.store.schema import metadata


def test_migrations_build_exactly_the_tables_the_code_declares(database_url: str) -> None:
    """A table or column added in code without a migration (or the reverse) fails here."""
    database = Database(database_url)
    try:
        migrate.upgrade(database)
        with database.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert differences == []
    finally:
        database.dispose()
