"""identity: users, memberships, key and project limits, spend totals, audit IP

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "memberships",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_memberships_project_id_projects")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint("project_id", "user_id", name=op.f("uq_memberships_project_id")),
    )
    op.create_index(op.f("ix_memberships_project_id"), "memberships", ["project_id"])
    op.create_index(op.f("ix_memberships_user_id"), "memberships", ["user_id"])
    op.create_table(
        "spend_totals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spend_totals")),
        sa.UniqueConstraint("subject", "period", name=op.f("uq_spend_totals_subject")),
    )
    # Existing rows get empty limits; new rows always set them.
    op.add_column("projects", sa.Column("limits", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("projects", sa.Column("disabled_at", _TS, nullable=True))
    op.add_column("api_keys", sa.Column("limits", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("audit_events", sa.Column("ip", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("ip")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("limits")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("limits")
    op.drop_table("spend_totals")
    op.drop_index(op.f("ix_memberships_user_id"), table_name="memberships")
    op.drop_index(op.f("ix_memberships_project_id"), table_name="memberships")
    op.drop_table("memberships")
    op.drop_table("users")
