"""A station's profiles and disclosure settings, as its agent reports them (one row per
node, replaced by each report).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_settings",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("profiles", sa.JSON(), nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_node_settings_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_settings")),
    )


def downgrade() -> None:
    op.drop_table("node_settings")
