"""deployments on ray: where a deployment's replicas run (deployments.placement)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # local: child processes of the gateway (every deployment so far); ray: Ray actors.
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column("placement", sa.String(length=16), nullable=False, server_default="local")
        )


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("placement")
