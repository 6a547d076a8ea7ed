"""The agent's own policy (agent.yaml `policy:`) beside a station's reported profiles;
null for a report without it (an agent older than the policy report).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("node_settings") as batch:
        batch.add_column(sa.Column("policy", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("node_settings") as batch:
        batch.drop_column("policy")
