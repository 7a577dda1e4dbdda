"""trace_attempt_failures: each failed upstream attempt by target, for stats

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trace_attempt_failures",
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("error_type", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("trace_id", "seq", name=op.f("pk_trace_attempt_failures")),
    )
    op.create_index(
        "ix_trace_attempt_failures_project_id_start_us",
        "trace_attempt_failures",
        ["project_id", "start_us"],
    )


def downgrade() -> None:
    op.drop_index("ix_trace_attempt_failures_project_id_start_us", "trace_attempt_failures")
    op.drop_table("trace_attempt_failures")
