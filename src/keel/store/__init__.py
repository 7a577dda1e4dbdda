"""Persistence: SQLAlchemy engine and sessions, the shared declarative base, migrations."""
