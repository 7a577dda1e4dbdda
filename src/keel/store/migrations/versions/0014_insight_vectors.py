"""insight_vectors and insight_settings: embeddings of sampled traffic, per-project settings

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "insight_vectors",
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=False),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("trace_id", name=op.f("pk_insight_vectors")),
    )
    op.create_index(
        "ix_insight_vectors_project_id_start_us", "insight_vectors", ["project_id", "start_us"]
    )
    op.create_table(
        "insight_settings",
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("anomaly_threshold", sa.Float(), nullable=False),
        sa.Column("drift_webhook", sa.String(500), nullable=True),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_insight_settings")),
    )


def downgrade() -> None:
    op.drop_table("insight_settings")
    op.drop_index("ix_insight_vectors_project_id_start_us", "insight_vectors")
    op.drop_table("insight_vectors")
