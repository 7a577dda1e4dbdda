from __future__ import annotations

from sqlalchemy import inspect, text

from keel.store import migrate
from keel.store.db import Database


def test_migrations_create_the_schema_and_are_idempotent(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate.upgrade(database)
        migrate.upgrade(database)  # a second start must be a no-op, not an error
        assert migrate.current_revision(database) == migrate.head_revision()
        tables = set(inspect(database.engine).get_table_names())
        assert {"projects", "api_keys", "alembic_version"} <= tables
    finally:
        database.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'keel.db'}")
    try:
        migrate.upgrade(database)
        with database.engine.connect() as connection:
            mode = connection.execute(text("PRAGMA journal_mode")).scalar()
        assert mode == "wal"
        assert (tmp_path / "nested" / "keel.db").is_file()
    finally:
        database.dispose()


def test_bare_postgresql_urls_use_psycopg3() -> None:
    database = Database("postgresql://user:pw@127.0.0.1:1/db")
    try:
        assert database.engine.dialect.driver == "psycopg"
    finally:
        database.dispose()
