"""insight_topic_runs: the stored result of each insights.topics job

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "insight_topic_runs",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("since_us", sa.BigInteger(), nullable=False),
        sa.Column("until_us", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("centroids", sa.LargeBinary(), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_insight_topic_runs")),
    )
    op.create_index(
        "ix_insight_topic_runs_project_id_created_us",
        "insight_topic_runs",
        ["project_id", "created_us"],
    )


def downgrade() -> None:
    op.drop_index("ix_insight_topic_runs_project_id_created_us", "insight_topic_runs")
    op.drop_table("insight_topic_runs")
