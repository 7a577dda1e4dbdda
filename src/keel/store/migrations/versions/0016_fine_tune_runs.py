"""fine tuning: each fine-tuning job's phase, scan, lineage and checkpoints

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fine_tune_runs",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("base_model", sa.String(length=120), nullable=False),
        sa.Column("scan", sa.JSON(), nullable=False),
        sa.Column("trained_tokens", sa.Integer(), nullable=False),
        sa.Column("model_ref", sa.String(length=120), nullable=True),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_fine_tune_runs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_fine_tune_runs")),
    )
    with op.batch_alter_table("fine_tune_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fine_tune_runs_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "fine_tune_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("valid_loss", sa.Float(), nullable=True),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_fine_tune_checkpoints_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tune_checkpoints")),
        sa.UniqueConstraint("job_id", "step", name=op.f("uq_fine_tune_checkpoints_job_id")),
    )
    with op.batch_alter_table("fine_tune_checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fine_tune_checkpoints_job_id"), ["job_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("fine_tune_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tune_checkpoints_job_id"))
    op.drop_table("fine_tune_checkpoints")
    with op.batch_alter_table("fine_tune_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fine_tune_runs_project_id"))
    op.drop_table("fine_tune_runs")
