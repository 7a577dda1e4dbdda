"""guard and cache: guard policies and attachments; guard and cache columns on traces

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "guard_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_guard_policies_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_policies")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_guard_policies_project_id")),
    )
    op.create_table(
        "guard_attachments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("policy", sa.String(100), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_guard_attachments_project_id_projects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_attachments")),
        sa.UniqueConstraint(
            "project_id", "scope", "target", name=op.f("uq_guard_attachments_project_id")
        ),
    )
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("guard_policy", sa.String(100), nullable=True))
        batch.add_column(sa.Column("guard_action", sa.String(16), nullable=True))
        batch.add_column(sa.Column("cache", sa.String(16), nullable=True))
        batch.add_column(sa.Column("saved_cost", sa.Float(), nullable=True))
        batch.add_column(sa.Column("saved_ms", sa.Float(), nullable=True))
    op.create_index(
        "ix_traces_project_id_guard_action", "traces", ["project_id", "guard_action", "start_us"]
    )


def downgrade() -> None:
    op.drop_index("ix_traces_project_id_guard_action", table_name="traces")
    with op.batch_alter_table("traces") as batch:
        for column in ("saved_ms", "saved_cost", "cache", "guard_action", "guard_policy"):
            batch.drop_column(column)
    op.drop_table("guard_attachments")
    op.drop_table("guard_policies")
