"""Every module's tables, gathered into one metadata for Alembic's autogenerate."""

from keel.auth import tables as auth_tables
from keel.prompts import tables as prompt_tables
from keel.registry import tables as registry_tables
from keel.store.base import Base

metadata = Base.metadata
MODULES = (auth_tables, prompt_tables, registry_tables)
