"""Every module's tables, gathered into one metadata for Alembic's autogenerate."""

from keel.auth import tables as auth_tables
from keel.evals import tables as eval_tables
from keel.finetune import tables as finetune_tables
from keel.guard import tables as guard_tables
from keel.insights import tables as insight_tables
from keel.jobs import tables as job_tables
from keel.knowledge import tables as knowledge_tables
from keel.limits import tables as limit_tables
from keel.prompts import tables as prompt_tables
from keel.registry import tables as registry_tables
from keel.store.base import Base
from keel.tracing import tables as tracing_tables
from keel.workflows import tables as workflow_tables

metadata = Base.metadata
MODULES = (
    auth_tables,
    eval_tables,
    finetune_tables,
    guard_tables,
    insight_tables,
    job_tables,
    knowledge_tables,
    limit_tables,
    prompt_tables,
    registry_tables,
    tracing_tables,
    workflow_tables,
)
